//! The stats/admin page in a real browser: lbd serves `[admin]` on lb1's
//! front address; headless Chromium in the client namespace logs in as
//! `admin`, ticks be2, clicks Drain, sees be2 become DRAIN on the page
//! (and again after a reload), and new client connections stop reaching
//! be2. A `readonly` login sees the states but no controls. The screenshot
//! is kept in target/test-artifacts/admin-page.png.
//!
//! `cargo build -p lb-userspace --bin lbd && cargo test -p lb-tests --test lab_admin_page -- --test-threads=1`

use std::net::SocketAddrV4;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::{Client, Locator};
use lb_tests::lab::admin_http::{ADMIN_PORT, AdminUser, admin_config};
use lb_tests::lab::browser::{
    Browser, artifact_path, bounded, close, save_screenshot, tell, wait_for_attr, wait_for_text,
};
use lb_tests::lab::{Lab, ServiceConfig, assert_nothing_left, topology};

/// The most one browser flow may take.
const FLOW_LIMIT: Duration = Duration::from_secs(120);
const SOURCES: usize = 60;
const PAGE_WAIT: Duration = Duration::from_secs(15);

/// Opens the login form, signs in, and waits for the stats page.
async fn sign_in(client: &Client, page: SocketAddrV4, user: &AdminUser) -> Result<()> {
    client
        .goto(&format!("http://{page}/login"))
        .await
        .context("opening the login form")?;
    client
        .find(Locator::Css("input[name=user]"))
        .await?
        .send_keys(&user.name)
        .await?;
    client
        .find(Locator::Css("input[name=password]"))
        .await?
        .send_keys(&user.password)
        .await?;
    client.find(Locator::Css("#login")).await?.click().await?;
    wait_for_attr(client, "#row-web-be2", "data-state", PAGE_WAIT, |s| {
        !s.is_empty()
    })
    .await
    .with_context(|| format!("{} signed in but the stats page did not show", user.name))?;
    Ok(())
}

fn is_drain(state: &str) -> bool {
    state.eq_ignore_ascii_case("drain")
}

#[test]
fn admin_drains_a_backend_from_the_page_and_readonly_sees_no_controls() {
    let lab = Lab::datapath("apage", 3, SOURCES).expect("building the lab");
    let prefix = lab.prefix().to_string();
    let pin_dir = lab.lbd_pin_dir(1);
    lab.start_backend_servers(80).expect("starting backends");
    let admin = AdminUser::new("admin", "admin", "correct horse").expect("hashing");
    let readonly = AdminUser::new("viewer", "readonly", "battery staple").expect("hashing");
    let page = SocketAddrV4::new(topology::lb_front_addr(1), ADMIN_PORT);
    let svc = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[1, 1, 1]));
    let mut lbd_config = lab.lbd_config(vec![svc]);
    lbd_config.admin = Some(admin_config(
        page,
        "30s",
        &[admin.clone(), readonly.clone()],
    ));
    let config = lab.write_config("lbd.toml", &lbd_config).unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("starting lbd");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(20))
        .expect("service up");
    lab.wait_for_admin(&mut lbd, "cl", page, Duration::from_secs(20))
        .expect("admin page up");

    let before = lab.spread(vip, SOURCES, 1, &[]).expect("spread before");
    before.assert_all_ok_and_sticky(SOURCES, "before the drain");
    let be2_before = before
        .clients_per_backend()
        .get("be2")
        .copied()
        .unwrap_or(0);
    assert!(
        be2_before > 0,
        "be2 had no clients to begin with: {before:?}"
    );

    let browser = Browser::start(&lab, "cl").expect("starting the browser");
    let shot = artifact_path("admin-page.png").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin_result: Result<()> = runtime.block_on(async {
        let client = browser.session().await?;
        let outcome = bounded("the admin's drain", FLOW_LIMIT, async {
            sign_in(&client, page, &admin).await?;
            let state = client
                .find(Locator::Css("#row-web-be2"))
                .await?
                .attr("data-state")
                .await?
                .unwrap_or_default();
            if is_drain(&state) {
                bail!("be2 shows {state} before anyone drained it");
            }
            client
                .find(Locator::Css("input[name=backend][value='web/be2']"))
                .await
                .context("no checkbox for web/be2 on the admin's page")?
                .click()
                .await?;
            client
                .find(Locator::Css("#set-drain"))
                .await
                .context("no Drain button on the admin's page")?
                .click()
                .await?;
            wait_for_attr(&client, "#row-web-be2", "data-state", PAGE_WAIT, is_drain).await?;
            // Not just the answer to the click: a fresh load shows it too.
            client.goto(&format!("http://{page}/stats")).await?;
            wait_for_attr(&client, "#row-web-be2", "data-state", PAGE_WAIT, is_drain).await?;
            wait_for_text(&client, "#row-web-be2", PAGE_WAIT, |t| {
                t.to_uppercase().contains("DRAIN")
            })
            .await?;
            for other in ["be1", "be3"] {
                let state = client
                    .find(Locator::Css(&format!("#row-web-{other}")))
                    .await?
                    .attr("data-state")
                    .await?
                    .unwrap_or_default();
                if is_drain(&state) {
                    bail!("{other} was not ticked but shows {state}");
                }
            }
            save_screenshot(&client, &shot).await?;
            Ok(())
        })
        .await;
        close(client).await;
        outcome
    });
    if let Err(e) = &admin_result {
        panic!(
            "admin session: {e:#}\nchromedriver:\n{}",
            browser.log_tail(20)
        );
    }
    tell(&format!("admin page screenshot: {}", shot.display()));

    let status = lab
        .lbd_command(1, &["status", "--json"])
        .expect("lbd status --json");
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status is JSON");
    let be2 = status["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "be2")
        .expect("be2 in status");
    assert_eq!(be2["admin"], "drain", "the agent holds the drain: {be2}");
    // Piped without a flag it stays JSON, so scripts keep working.
    let piped = lab.lbd_command(1, &["status"]).expect("lbd status");
    serde_json::from_slice::<serde_json::Value>(&piped.stdout)
        .expect("piped lbd status prints JSON");
    // The terminal picture says the same as the JSON.
    let table = lab
        .lbd_command(1, &["status", "--table"])
        .expect("lbd status --table");
    let table = String::from_utf8_lossy(&table.stdout);
    eprintln!("lbd status:\n{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row {name} in lbd status:\n{table}"))
            .to_string()
    };
    assert!(row("be2").contains(" DRAIN "), "{table}");
    assert!(row("be1").contains(" UP "), "{table}");
    assert!(table.contains("service web  192.0.2.10:80"), "{table}");

    let after = lab.spread(vip, SOURCES, 1, &[]).expect("spread after");
    assert_eq!(after.errors, 0, "{:?}", after.error_samples);
    let be2_after = after.clients_per_backend().get("be2").copied().unwrap_or(0);
    assert_eq!(
        be2_after,
        0,
        "new clients still reach the drained be2: {:?}",
        after.clients_per_backend()
    );

    let readonly_result: Result<()> = runtime.block_on(async {
        let client = browser.session().await?;
        let outcome = bounded("the readonly view", FLOW_LIMIT, async {
            sign_in(&client, page, &readonly).await?;
            wait_for_attr(&client, "#row-web-be2", "data-state", PAGE_WAIT, is_drain).await?;
            let boxes = client.find_all(Locator::Css("input[name=backend]")).await?;
            let buttons = client
                .find_all(Locator::Css("#set-ready, #set-drain, #set-maint"))
                .await?;
            if !boxes.is_empty() || !buttons.is_empty() {
                bail!(
                    "readonly sees {} checkboxes and {} state buttons",
                    boxes.len(),
                    buttons.len()
                );
            }
            Ok(())
        })
        .await;
        close(client).await;
        outcome
    });
    if let Err(e) = &readonly_result {
        panic!(
            "readonly session: {e:#}\nchromedriver:\n{}",
            browser.log_tail(20)
        );
    }

    drop(browser);
    lbd.stop(Duration::from_secs(10)).expect("stopping lbd");
    drop(lbd);
    lab.teardown().expect("teardown");
    drop(lab);
    assert_nothing_left(&prefix, &pin_dir);
}
