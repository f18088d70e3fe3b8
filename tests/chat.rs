//! Chat and paging channels against stand-ins that check each request as the provider documents
//! it and answer as the provider does (tests/support/chat_providers.py): every channel gets the
//! opening and the recovery of a real lab incident (a recorded PHP-FPM outage) in its own idiom;
//! rate limits are waited out as the provider asks; refusals are told apart (the request's fault
//! is given up, the channel's settings hold its messages); a page is never opened twice.

mod support;

use probe::config::Config;
use probe::notify::outbox::Recorder;
use probe::schedule::run;
use probe::store::{SqliteStore, Store};
use serde_json::Value;
use support::chat::{Providers, NTFY_TOKEN, OPSGENIE_KEY, ROUTING_KEY, TELEGRAM_TOKEN};
use support::pki::TempPki;
use support::{fixture, minute};

/// The environment of one test: each test names its own variables (tests share a process).
struct Env {
    prefix: &'static str,
}

impl Env {
    fn var(&self, name: &str) -> String {
        format!("PROBE_TEST_CHAT_{}_{name}", self.prefix)
    }

    fn set(&self, providers: &Providers) {
        let set = |name: &str, value: String| std::env::set_var(self.var(name), value);
        set("SLACK", providers.url("/slack/services/T000/B000/XXXX"));
        set("TEAMS", providers.url("/teams/workflows/flow1"));
        set("DISCORD", providers.url("/discord/api/webhooks/1/tok"));
        set("TG", TELEGRAM_TOKEN.into());
        set("NTFY", NTFY_TOKEN.into());
        set("PD", ROUTING_KEY.into());
        set("OG", OPSGENIE_KEY.into());
    }
}

/// A config with one site, every channel pointed at the stand-ins, `extra` appended.
fn config(dir: &std::path::Path, pki: &TempPki, providers: &Providers, env: &Env) -> Config {
    let v = |name: &str| env.var(name);
    let text = format!(
        r#"defaults:
  ca_file: {ca}
sites:
  - name: my shop   # a space: the Opsgenie alias goes into a URL path
    url: https://shop.example/
    origins: [203.0.113.10]
alerts:
  confirm_runs: 1
  recover_runs: 1
feeds:
  url: https://status.example/
notify:
  - {{type: slack, url_env: {slack}}}
  - {{type: teams, url_env: {teams}}}
  - {{type: discord, url_env: {discord}}}
  - {{type: telegram, token_env: {tg}, chat_id: "12345", url: "{telegram}"}}
  - {{type: ntfy, url: "{ntfy}", token_env: {ntfy_token}}}
  - {{type: pagerduty, routing_key_env: {pd}, url: "{pagerduty}"}}
  - {{type: opsgenie, api_key_env: {og}, url: "{opsgenie}", severity: [down]}}
store:
  path: probe.sqlite
"#,
        ca = pki.ca,
        slack = v("SLACK"),
        teams = v("TEAMS"),
        discord = v("DISCORD"),
        tg = v("TG"),
        telegram = providers.url("/telegram"),
        ntfy = providers.url("/probe-alerts"),
        ntfy_token = v("NTFY"),
        pd = v("PD"),
        pagerduty = providers.url("/pagerduty/v2/enqueue"),
        og = v("OG"),
        opsgenie = providers.url("/opsgenie"),
    );
    let path = dir.join("probes.yaml");
    std::fs::write(&path, text).unwrap();
    probe::config::load(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// Records one run of the site with the recorded report `name` at minute `m`, then delivers.
async fn run_and_deliver(
    config: &Config,
    store: &mut SqliteStore,
    recorder: &mut Recorder,
    name: &str,
    m: i64,
) -> probe::notify::outbox::FlushSummary {
    let report = fixture(name);
    run::record_site(config, store, &config.sites[0], &report, false, minute(m)).unwrap();
    run::deliver_outbox(config, store, minute(m), recorder)
        .await
        .unwrap()
}

fn body(request: &Value) -> &Value {
    &request["body"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_gets_the_opening_and_the_recovery_in_its_own_idiom() {
    let pki = TempPki::new();
    let providers = Providers::start(pki.dir(), &pki.pki);
    let env = Env { prefix: "IDIOM" };
    env.set(&providers);
    let config = config(pki.dir(), &pki, &providers, &env);
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let mut recorder = Recorder::default();

    let opened = run_and_deliver(&config, &mut store, &mut recorder, "lab_fpm_stopped", 0).await;
    assert_eq!(
        (opened.sent, opened.waiting(), opened.given_up),
        (7, 0, 0),
        "{opened:?}"
    );
    let recovered = run_and_deliver(&config, &mut store, &mut recorder, "lab_healthy", 1).await;
    assert_eq!(
        (recovered.sent, recovered.waiting()),
        (7, 0),
        "{recovered:?}"
    );

    // Slack: Block Kit, the cause as the header, the hop, evidence and the first next step.
    let slack = providers.of("slack");
    assert_eq!(slack.len(), 2);
    let blocks = body(&slack[0])["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    let header = blocks[0]["text"]["text"].as_str().unwrap();
    assert!(
        header.starts_with("[DOWN] my shop: the web server cannot reach PHP-FPM"),
        "{header}"
    );
    let all = body(&slack[0]).to_string();
    assert!(
        all.contains("hop `origin_fpm`")
            && all.contains("*Evidence*")
            && all.contains("*Next step*")
            && all.contains("<https://status.example/|Status page>"),
        "{all}"
    );
    assert!(body(&slack[1])["text"]
        .as_str()
        .unwrap()
        .starts_with("[RECOVERED] my shop"));

    // Teams: an Adaptive Card with the facts and a link to the status page.
    let teams = providers.of("teams");
    let card = &body(&teams[0])["attachments"][0]["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["actions"][0]["url"], "https://status.example/");
    assert!(
        card.to_string()
            .contains("\"title\":\"Hop\",\"value\":\"origin_fpm\""),
        "{card}"
    );

    // Discord: an embed, red for the outage, green for the recovery; nobody pinged.
    let discord = providers.of("discord");
    let embed = &body(&discord[0])["embeds"][0];
    assert_eq!(embed["color"], 0xd9_3f_3f);
    assert_eq!(
        body(&discord[0])["allowed_mentions"]["parse"],
        serde_json::json!([])
    );
    assert_eq!(body(&discord[1])["embeds"][0]["color"], 0x2e_b8_6b);

    // Telegram: HTML the Bot API parses, to the configured chat.
    let telegram = providers.of("telegram");
    let text = body(&telegram[0])["text"].as_str().unwrap();
    assert!(
        text.starts_with("<b>[DOWN] my shop:") && text.contains("<code>origin_fpm</code>"),
        "{text}"
    );
    assert_eq!(body(&telegram[0])["parse_mode"], "HTML");

    // ntfy: priority and tags by severity, the token as a bearer, a click to the status page.
    let ntfy = providers.of("ntfy");
    assert_eq!(
        (
            &body(&ntfy[0])["topic"],
            &body(&ntfy[0])["priority"],
            &body(&ntfy[1])["priority"]
        ),
        (
            &Value::from("probe-alerts"),
            &Value::from(5),
            &Value::from(3)
        )
    );
    assert_eq!(
        ntfy[0]["headers"]["authorization"],
        format!("Bearer {NTFY_TOKEN}")
    );

    // PagerDuty: trigger then resolve of one dedup key; one incident, now resolved.
    let pd = providers.of("pagerduty");
    assert_eq!(
        (&body(&pd[0])["event_action"], &body(&pd[1])["event_action"]),
        (&Value::from("trigger"), &Value::from("resolve"))
    );
    assert_eq!(body(&pd[0])["dedup_key"], body(&pd[1])["dedup_key"]);
    assert_eq!(body(&pd[0])["payload"]["severity"], "critical");
    let incidents = providers.incidents("pagerduty.json");
    assert_eq!(incidents["opened"], 1);
    assert!(incidents["open"]
        .as_object()
        .unwrap()
        .values()
        .all(|v| v == "resolved"));

    // Opsgenie: created and closed by alias.
    let og = providers.incidents("opsgenie.json");
    assert_eq!(og["created"], 1);
    assert!(
        og["alerts"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == "closed"),
        "{og}"
    );

    // No secret in anything stored.
    let bytes = std::fs::read(config.store.sqlite_path().unwrap()).unwrap();
    let stored = String::from_utf8_lossy(&bytes);
    for secret in [
        TELEGRAM_TOKEN,
        ROUTING_KEY,
        OPSGENIE_KEY,
        NTFY_TOKEN,
        "XXXX",
        "/tok",
    ] {
        assert!(!stored.contains(secret), "the store keeps {secret}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out_and_refusals_told_apart() {
    let pki = TempPki::new();
    let providers = Providers::start(pki.dir(), &pki.pki);
    let env = Env { prefix: "LIMITS" };
    env.set(&providers);
    // Telegram's chat and PagerDuty's key are wrong: the channels' settings, whose messages
    // wait for the fix; Teams gets a card it can never take (the request's fault: given up).
    let good = config(pki.dir(), &pki, &providers, &env);
    let path = pki.dir().join("probes.yaml");
    let written = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        written.replace("chat_id: \"12345\"", "chat_id: \"999\""),
    )
    .unwrap();
    let config = probe::config::load(&path).unwrap().config;
    std::env::set_var(env.var("PD"), "wrong-key");
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let mut recorder = Recorder::default();
    // Slack, Teams and Discord (in that order) are asked to wait 900 s; Opsgenie refuses the
    // request as invalid.
    providers.throttle(3, 900);
    providers.refuse_next("opsgenie");
    let first = run_and_deliver(&config, &mut store, &mut recorder, "lab_fpm_stopped", 0).await;
    // ntfy delivered; three throttled; Telegram and PagerDuty held; Opsgenie given up.
    assert_eq!(
        (first.sent, first.failed, first.given_up),
        (1, 5, 1),
        "{first:?}"
    );
    let waiting = store.undelivered().unwrap();
    let by = |needle: &str| {
        waiting
            .iter()
            .find(|m| m.destination.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {waiting:#?}"))
    };
    for throttled in ["slack", "teams", "discord"] {
        let m = by(throttled);
        let next = m.next_attempt_at.expect("waiting, not given up");
        assert!(
            next >= minute(0) + time::Duration::seconds(900),
            "{throttled} retried at {next}, before the 900 s it was asked to wait"
        );
        assert!(
            m.last_error.as_deref().unwrap_or_default().contains("429"),
            "{m:?}"
        );
    }
    let error = |m: &probe::store::UndeliveredMessage| m.last_error.clone().unwrap_or_default();
    let telegram = by("telegram");
    assert!(
        telegram.given_up_at.is_none(),
        "a wrong chat is the channel's settings: {telegram:?}"
    );
    assert!(
        error(telegram).contains("Bad Request: chat not found"),
        "{telegram:?}"
    );
    let pd = by("pagerduty");
    assert!(
        pd.given_up_at.is_none(),
        "a wrong key is the channel's settings: {pd:?}"
    );
    assert!(error(pd).contains("'routing_key' is invalid"), "{pd:?}");
    let og = by("opsgenie");
    assert!(
        og.given_up_at.is_some() && error(og).contains("422"),
        "{og:?}"
    );
    // Nothing leaks into what is stored or said.
    for m in &waiting {
        let said = format!("{m:?}");
        assert!(
            !said.contains(TELEGRAM_TOKEN) && !said.contains("wrong-key"),
            "{said}"
        );
    }

    // The settings are fixed; 16 minutes on, everything waiting goes, with the chat and key as
    // they are now, and PagerDuty has one incident.
    std::env::set_var(env.var("PD"), ROUTING_KEY);
    let later = run::deliver_outbox(&good, &mut store, minute(16), &mut recorder)
        .await
        .unwrap();
    assert_eq!((later.sent, later.waiting()), (5, 0), "{later:?}");
    assert_eq!(body(&providers.of("telegram")[0])["chat_id"], "12345");
    assert_eq!(providers.incidents("pagerduty.json")["opened"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_sent_twice_never_opens_a_second_page() {
    let pki = TempPki::new();
    let providers = Providers::start(pki.dir(), &pki.pki);
    let env = Env { prefix: "TWICE" };
    env.set(&providers);
    let config = config(pki.dir(), &pki, &providers, &env);
    let mut store = SqliteStore::open(config.store.sqlite_path().unwrap()).unwrap();
    let mut recorder = Recorder::default();
    run_and_deliver(&config, &mut store, &mut recorder, "lab_fpm_stopped", 0).await;
    // The at-least-once edge: the same stored deliveries sent again (a prober that died before
    // recording them as sent).
    let pager = config
        .notify
        .iter()
        .find(|n| n.id.ends_with(":pagerduty"))
        .unwrap();
    let genie = config
        .notify
        .iter()
        .find(|n| n.id.ends_with(":opsgenie"))
        .unwrap();
    let verifier = probe::engine::trust_roots(&config.extra_roots)
        .unwrap()
        .verifier_for(probe::observe::Route::Edge);
    for (notifier, provider) in [(pager, "pagerduty"), (genie, "opsgenie")] {
        let sent = &providers.of(provider)[0];
        let message = probe::store::OutboxMessage {
            id: 1,
            channel: probe::store::Channel::Chat,
            key: "again".into(),
            notification: "again".into(),
            recipients: vec![notifier.id.clone()],
            subject: "opened".into(),
            body_text: stored_body(provider, sent),
            body_html: String::new(),
            attempts: 0,
            created_at: minute(0),
            thread: None,
        };
        probe::notify::chat::deliver(notifier, &message, verifier.clone())
            .await
            .unwrap();
    }
    assert_eq!(providers.of("pagerduty").len(), 2);
    assert_eq!(providers.incidents("pagerduty.json")["opened"], 1);
    assert_eq!(providers.incidents("opsgenie.json")["created"], 1);
}

/// The stored form of a request the stand-in received (what the outbox keeps for it).
fn stored_body(provider: &str, received: &Value) -> String {
    let mut body = received["body"].clone();
    match provider {
        "pagerduty" => {
            body.as_object_mut().unwrap().remove("routing_key");
            body.to_string()
        }
        _ => serde_json::json!({ "create": body }).to_string(),
    }
}
