//! hookline-dispatcher: delivers rendered requests over HTTP. See the `dispatcher` library.

fn main() -> std::process::ExitCode {
    service_kit::main("hookline-dispatcher", dispatcher::run)
}
