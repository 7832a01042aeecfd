//! `factum`: see the `factum_cli` library and `factum --help`.

fn main() -> std::process::ExitCode {
    factum_cli::run_from_env()
}
