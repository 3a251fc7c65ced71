//! `ferry web`: the dashboard's one-time URL from the daemon (which opens an HTTP listener on
//! a free loopback port if it has none), opened in a browser or printed.

use anyhow::Result;
use ferry_client::Endpoint;

use crate::cli::WebArgs;

/// Asks for the URL, then opens or prints it.
pub fn run(target: &Endpoint, args: WebArgs) -> Result<i32> {
    let url = crate::client_runtime()?.block_on(async {
        let mut client = super::connect(target).await?;
        anyhow::Ok(client.web_url().await?)
    })?;
    let graphical =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if !args.print && graphical {
        let opened = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        if opened.is_ok_and(|status| status.success()) {
            eprintln!("ferry: opened the dashboard in your browser");
            return Ok(0);
        }
    }
    // The URL holds the token: it goes to stdout alone, for whoever asked.
    println!("{url}");
    Ok(0)
}
