//! The dashboard in a real headless browser: Debian's `chromium`, driven through WebDriver
//! (`chromedriver`, with the `fantoccini` client), both installed by `.ci/deps`. The page
//! sees a job started from the CLI appear and its output arrive live (ANSI colours
//! rendered), kills it with its button, sees it end, and sends a hub message that a
//! `ferry chat` peer receives; a screenshot is saved as `target/dashboard.png`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helper::{poll_until, wait_until, Daemon};

const PATIENCE: Duration = Duration::from_secs(30);

/// `chromedriver` on a free loopback port, stopped when dropped.
struct Driver {
    process: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        let found = Command::new("chromedriver").arg("--version").output();
        assert!(
            found.is_ok_and(|out| out.status.success()),
            "chromedriver is missing: run .ci/deps (it installs Debian's chromium and chromium-driver)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        wait_until(
            "chromedriver to listen",
            PATIENCE,
            || TcpStream::connect(("127.0.0.1", port)).ok(),
            || format!("nothing on port {port}"),
        );
        Driver {
            process,
            port,
            _profile: tempfile::tempdir().expect("profile"),
        }
    }

    /// A headless Chromium session.
    async fn browser(&self) -> Client {
        let profile = self._profile.path().display().to_string();
        let capabilities = json!({
            "goog:chromeOptions": {
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={profile}"),
                ],
            },
        });
        let capabilities = match capabilities {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object"),
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Runs `script` in the page; its value.
fn eval(rt: &tokio::runtime::Runtime, browser: &Client, script: &str) -> serde_json::Value {
    rt.block_on(browser.execute(script, Vec::new()))
        .unwrap_or(serde_json::Value::Null)
}

/// Waits until the text of the element `selector` holds `needle`.
fn wait_for_text(
    rt: &tokio::runtime::Runtime,
    browser: &Client,
    what: &str,
    selector: &str,
    needle: &str,
) {
    let script = format!("return document.querySelector(\"{selector}\").textContent");
    wait_until(
        what,
        PATIENCE,
        || {
            let text = eval(rt, browser, &script);
            text.as_str()
                .is_some_and(|t| t.contains(needle))
                .then_some(())
        },
        || eval(rt, browser, &script).to_string(),
    );
}

/// Waits until `script` returns `value`; a failure shows the jobs table.
fn wait_for_jobs_table(
    rt: &tokio::runtime::Runtime,
    browser: &Client,
    what: &str,
    script: &str,
    value: serde_json::Value,
) {
    wait_until(
        what,
        PATIENCE,
        || (eval(rt, browser, script) == value).then_some(()),
        || {
            let table = "return document.querySelector('#jobs').innerText";
            eval(rt, browser, table).to_string()
        },
    );
}

#[test]
fn the_dashboard_shows_a_cli_job_live_kills_it_and_talks_to_the_hub() {
    let daemon = Daemon::start_networked(&["--allow-any-command"], &["http:tcp:127.0.0.1:0"]);
    let out = daemon.run(&["web", "--print"]);
    assert!(out.status.success(), "{out:?}");
    let url = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let driver = Driver::start();
    let rt = crate::hub::runtime();
    let browser = rt.block_on(driver.browser());
    rt.block_on(browser.goto(&url)).expect("open the dashboard");
    // The one-time URL left the address bar.
    let address = rt.block_on(browser.current_url()).expect("url");
    assert_eq!(address.query(), None, "{address}");
    wait_until(
        "the dashboard to go live",
        PATIENCE,
        || {
            (eval(
                &rt,
                &browser,
                "return document.querySelector('#status').textContent",
            ) == "live")
                .then_some(())
        },
        || eval(&rt, &browser, "return document.body.innerText").to_string(),
    );

    // A job from the CLI appears, and its output arrives live, its colours rendered.
    let script = "for i in $(seq 1 600); do printf '\\033[32mline %d\\033[0m <b>not bold</b>\\n' $i; sleep 0.05; done";
    let out = daemon.run(&["run", "--detach", "--", "sh", "-c", script]);
    assert!(out.status.success(), "{out:?}");
    let job = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let row = format!("#jobs tbody tr[data-id='{job}']");
    wait_for_jobs_table(
        &rt,
        &browser,
        "the CLI's job in the jobs table",
        &format!("return document.querySelector(\"{row}\") !== null"),
        true.into(),
    );
    rt.block_on(async { browser.find(Locator::Css(&row)).await?.click().await })
        .expect("select the job");
    wait_for_text(
        &rt,
        &browser,
        "its output, live",
        "#output",
        "line 5 <b>not bold</b>",
    );
    let coloured = eval(
        &rt,
        &browser,
        "return document.querySelectorAll('#output span.fg-2').length",
    );
    assert!(coloured.as_u64() > Some(0), "no green spans: {coloured}");
    let markup = eval(
        &rt,
        &browser,
        "return document.querySelectorAll('#output b').length",
    );
    assert_eq!(markup, 0, "output became HTML");
    assert_eq!(
        eval(
            &rt,
            &browser,
            &format!("return document.querySelector(\"{row}\").dataset.state")
        ),
        "running"
    );

    // Kill it with its button: it ends, killed.
    rt.block_on(async {
        browser
            .find(Locator::Css(&format!("{row} button.kill")))
            .await?
            .click()
            .await
    })
    .expect("click kill");
    wait_for_jobs_table(
        &rt,
        &browser,
        "the job to end, killed",
        &format!("return document.querySelector(\"{row}\").dataset.state"),
        "killed".into(),
    );
    wait_for_text(
        &rt,
        &browser,
        "the output to say how it ended",
        "#output",
        "killed by signal 15",
    );
    let shown = daemon.run(&["ps", "--json"]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("\"killed\":true"),
        "{shown:?}"
    );

    // The hub: a chat peer is seen, and the page's message reaches it.
    let mut chat = crate::hub::chat_from_a_pipe(&daemon, "ann");
    let mut chat_out = chat.stdout.take().expect("stdout");
    let heard = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reading = std::sync::Arc::clone(&heard);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = chat_out.read(&mut buf) {
            let mut heard = reading.lock().unwrap_or_else(|e| e.into_inner());
            heard.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_for_text(
        &rt,
        &browser,
        "the page to see ann join",
        "#hub-log",
        "ann (ferry) joined",
    );
    rt.block_on(async {
        browser
            .find(Locator::Css("#hub-text"))
            .await?
            .send_keys("hello from the dashboard")
            .await?;
        browser.find(Locator::Css("#hub-send")).await?.click().await
    })
    .expect("send a hub message");
    let heard_now = || heard.lock().unwrap_or_else(|e| e.into_inner()).clone();
    wait_until(
        "ann to receive the page's message",
        PATIENCE,
        || {
            heard_now()
                .contains("hello from the dashboard")
                .then_some(())
        },
        heard_now,
    );
    // The peers table lists the chat with its dialect.
    let peers = poll_until(PATIENCE, || {
        let text = eval(
            &rt,
            &browser,
            "return document.querySelector('#peers').textContent",
        );
        text.as_str()
            .filter(|t| t.contains("ann"))
            .map(str::to_owned)
    });
    assert!(peers.is_some_and(|t| t.contains("ferry") && t.contains("http")));

    let png = rt.block_on(browser.screenshot()).expect("screenshot");
    let target =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png");
    std::fs::write(&target, png).expect("save the screenshot");
    let _ = rt.block_on(browser.close());
    drop(chat.stdin.take());
    let _ = chat.wait();
}
