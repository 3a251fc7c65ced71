//! `ferry`: the client, with every subcommand. The daemon is `ferryd`, beside it.

fn main() -> std::process::ExitCode {
    ferry::client_main()
}
