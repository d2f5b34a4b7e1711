//! hookline-renderer: turns events into rendered deliveries. See the `renderer` library.

fn main() -> std::process::ExitCode {
    service_kit::main("hookline-renderer", renderer::run)
}
