//! `ferryd`: the ferry daemon. `ferry daemon` runs it; a client that needs a daemon starts it.

fn main() -> std::process::ExitCode {
    ferry::daemon_main()
}
