//! hookline-producer: HTTP ingest and the management API. See the `producer` library.

fn main() -> std::process::ExitCode {
    service_kit::main("hookline-producer", producer::run)
}
