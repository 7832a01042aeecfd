//! `factum`: see the `factum_cli` library and `factum --help`.

fn main() -> std::process::ExitCode {
    factum_cli::main_with_args()
}
