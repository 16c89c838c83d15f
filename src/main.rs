//! `berth`: the command line (see [`berth::cli`]).

fn main() -> std::process::ExitCode {
    berth::cli::main()
}
