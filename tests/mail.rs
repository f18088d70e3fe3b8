//! Alert mail through a real SMTP server (aiosmtpd with STARTTLS and AUTH): rendered, queued in
//! the store, delivered once; kept and retried when the server is down; never sent twice.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use probe::alert::Notification;
use probe::config::{Smtp, SmtpSecurity};
use probe::notify::mail::{flush_outbox, render};
use probe::store::{RunRecord, SqliteStore, Store};
use probe::ProbeReport;
use support::pki::TempPki;
use support::smtp::{SmtpOptions, SmtpServer, PASSWORD, USER};
use time::OffsetDateTime;

fn report(name: &str) -> ProbeReport {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn smtp(port: u16, ca: &str, password_env: &str) -> Smtp {
    Smtp {
        host: "127.0.0.1".into(),
        port,
        security: SmtpSecurity::Starttls,
        username: Some(USER.into()),
        password_env: Some(password_env.into()),
        allow_plaintext_auth: false,
        from: "probe <probe@example.com>".into(),
        ca_file: Some(ca.into()),
        timeout: Duration::from_secs(5),
    }
}

/// Queues the "opened" alert of the lab's stale-socket incident, as a run would.
fn queue_opened(store: &mut SqliteStore, now: OffsetDateTime) -> String {
    let report = report("edge_stale_fastcgi_socket");
    let notification = Notification::Opened {
        severity: probe::alert::Severity::Down,
        incident: 1,
        episode: 0,
        diagnosis: report.diagnosis.clone(),
    };
    let message = render(
        "example.com",
        &report.target,
        &notification,
        &["ops@example.com".to_string()],
    )
    .remove(0);
    let state = probe::alert::AlertState::default();
    store
        .record_run(&RunRecord {
            site: "example.com",
            at: now,
            report: &report,
            state: &state,
            messages: std::slice::from_ref(&message),
        })
        .unwrap();
    message.key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_delivered_once_over_starttls_with_auth() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_A", PASSWORD);
    let server = SmtpServer::start(pki.dir(), &pki.pki, None);
    let settings = smtp(server.port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_A");
    let mut store = SqliteStore::open(&pki.dir().join("probe.sqlite")).unwrap();
    let now = OffsetDateTime::now_utc();
    queue_opened(&mut store, now);

    let summary = flush_outbox(&mut store, &settings, now).await.unwrap();
    assert_eq!((summary.sent, summary.failed), (1, 0));
    let again = flush_outbox(&mut store, &settings, now + Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(again.sent, 0, "a delivered message is never sent again");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    let unfolded = mail.replace("\r\n ", " ").replace("\n ", " ");
    assert!(
        unfolded.contains(
            "Subject: [DOWN] example.com: the web server cannot reach PHP-FPM (fpm_unreachable)"
        ),
        "{mail}"
    );
    let id_line = mail
        .lines()
        .find(|l| l.starts_with("Message-ID: "))
        .unwrap_or_else(|| panic!("no Message-ID: {mail}"));
    assert!(
        id_line.starts_with("Message-ID: <example-com-1-opened.")
            && id_line.ends_with("@example.com>"),
        "{id_line}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(
        mail.contains("origin_fpm") && mail.contains("grep -rn fastcgi_pass"),
        "the diagnosis and next steps: {mail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_queued_while_the_server_is_down_is_delivered_after_it_returns_exactly_once() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_B", PASSWORD);
    let port = support::free_tcp_port();
    let settings = smtp(port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_B");
    let mut store = SqliteStore::open(&pki.dir().join("probe.sqlite")).unwrap();
    let now = OffsetDateTime::now_utc();
    queue_opened(&mut store, now);
    let report = report("lab_healthy");
    let second = probe::store::NewMessage {
        channel: probe::store::Channel::Mail,
        key: "example.com/0/other".into(),
        notification: "example.com/0/other".into(),
        recipients: vec!["ops@example.com".into()],
        subject: "another".into(),
        body_text: "text".into(),
        body_html: "<p>html</p>".into(),
        thread: None,
    };
    let state = probe::alert::AlertState::default();
    store
        .record_run(&RunRecord {
            site: "other",
            at: now,
            report: &report,
            state: &state,
            messages: &[second],
        })
        .unwrap();

    // Nothing listens: the first attempt fails and the pass stops there instead of waiting out
    // the same failure for every message; both stay queued.
    let summary = flush_outbox(&mut store, &settings, now).await.unwrap();
    assert_eq!((summary.sent, summary.failed, summary.deferred), (0, 1, 1));
    let due: Vec<String> = store
        .due_messages(now + Duration::from_secs(30))
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        due,
        ["example.com/0/other"],
        "the tried one backs off, the deferred one is still due"
    );

    // The server comes back; once the backoff has passed, both are delivered.
    let server = SmtpServer::start(pki.dir(), &pki.pki, Some(port));
    let later = now + Duration::from_secs(61);
    assert_eq!(
        flush_outbox(&mut store, &settings, later)
            .await
            .unwrap()
            .sent,
        2
    );
    assert_eq!(
        flush_outbox(&mut store, &settings, later)
            .await
            .unwrap()
            .sent,
        0
    );
    assert_eq!(server.messages().len(), 2, "each delivered exactly once");
}

/// aiosmtpd never answers a refused AUTH (a tarpit): the delivery must still end, at the bound,
/// and the mail stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_the_mail_queued() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_C", "wrong");
    let server = SmtpServer::start(pki.dir(), &pki.pki, None);
    let settings = smtp(server.port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_C");
    let mut store = SqliteStore::open(&pki.dir().join("probe.sqlite")).unwrap();
    let now = OffsetDateTime::now_utc();
    queue_opened(&mut store, now);
    let started = std::time::Instant::now();
    let summary = flush_outbox(&mut store, &settings, now).await.unwrap();
    assert_eq!((summary.sent, summary.failed), (0, 1));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "bounded by the 5 s delivery timeout"
    );
    assert!(server.messages().is_empty());
    assert_eq!(
        store
            .due_messages(now + Duration::from_secs(61))
            .unwrap()
            .len(),
        1,
        "still queued"
    );
}

/// Queues the "opened" alert of the lab's stale-socket incident for `recipients`.
fn queue_for(store: &mut SqliteStore, now: OffsetDateTime, recipients: &[&str]) {
    let report = report("edge_stale_fastcgi_socket");
    let notification = Notification::Opened {
        severity: probe::alert::Severity::Down,
        incident: 1,
        episode: 0,
        diagnosis: report.diagnosis.clone(),
    };
    let to: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let messages = render("example.com", &report.target, &notification, &to);
    store
        .record_run(&RunRecord {
            site: "example.com",
            at: now,
            report: &report,
            state: &probe::alert::AlertState::default(),
            messages: &messages,
        })
        .unwrap();
}

fn header_value<'a>(mail: &'a str, name: &str) -> &'a str {
    mail.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
}

/// `security: plain` with a login: the password is never sent unless the config says
/// `allow_plaintext_auth: true` (lettre itself would send AUTH PLAIN in the clear).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_never_crosses_an_unencrypted_connection_unless_allowed() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_PLAIN", PASSWORD);
    let options = SmtpOptions {
        plain: true,
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start_with(pki.dir(), &pki.pki, None, &options);
    let mut settings = smtp(server.port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_PLAIN");
    settings.security = SmtpSecurity::Plain;
    settings.ca_file = None;
    let mut store = SqliteStore::open(&pki.dir().join("probe.sqlite")).unwrap();
    let now = OffsetDateTime::now_utc();
    queue_for(&mut store, now, &["ops@example.com"]);

    let summary = flush_outbox(&mut store, &settings, now).await.unwrap();
    assert_eq!(
        (summary.sent, summary.failed),
        (0, 1),
        "refused, kept queued"
    );
    assert!(
        server.auth_attempts().is_empty(),
        "no AUTH was sent: {:?}",
        server.auth_attempts()
    );
    assert!(server.messages().is_empty());

    // Allowed explicitly: it logs in (in the clear, as asked) and delivers.
    settings.allow_plaintext_auth = true;
    let later = now + Duration::from_secs(61);
    let summary = flush_outbox(&mut store, &settings, later).await.unwrap();
    assert_eq!(summary.sent, 1);
    assert_eq!(
        server.auth_attempts(),
        [("plain".to_string(), USER.to_string(), PASSWORD.to_string())]
    );
}

/// One recipient refused with 550 does not hold back the others: they get the mail (the same
/// Message-ID each), the refused one is given up with the server's reply and never retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_recipient_is_given_up_and_the_others_still_get_the_mail() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_RCPT", PASSWORD);
    let options = SmtpOptions {
        reject: vec!["bad@example.com".into()],
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start_with(pki.dir(), &pki.pki, None, &options);
    let settings = smtp(server.port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_RCPT");
    let path = pki.dir().join("probe.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let now = OffsetDateTime::now_utc();
    queue_for(
        &mut store,
        now,
        &["good@example.com", "bad@example.com", "also@example.com"],
    );

    let summary = flush_outbox(&mut store, &settings, now).await.unwrap();
    assert_eq!(
        (
            summary.sent,
            summary.given_up,
            summary.failed,
            summary.deferred
        ),
        (2, 1, 0, 0)
    );
    let good = server.messages_for("good@example.com");
    let also = server.messages_for("also@example.com");
    assert_eq!((good.len(), also.len()), (1, 1));
    assert!(server.messages_for("bad@example.com").is_empty());
    assert_eq!(
        header_value(&good[0], "Message-ID"),
        header_value(&also[0], "Message-ID"),
        "one notification, one Message-ID"
    );

    // Never retried, however long we wait; the reason is kept.
    let far = now + Duration::from_secs(30 * 86_400);
    assert!(store.due_messages(far).unwrap().is_empty());
    assert_eq!(
        flush_outbox(&mut store, &settings, far).await.unwrap().sent,
        0
    );
    let reason: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT last_error FROM outbox WHERE key LIKE '%#mail-bad@example.com'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reason.contains("550"), "{reason}");
    assert_eq!(server.messages().len(), 2, "nothing sent twice");
}

/// A 554 at the end of DATA is permanent: given up once with the reply, not "will retry".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_rejection_of_the_message_is_never_retried() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_554", PASSWORD);
    let options = SmtpOptions {
        reject_data: true,
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start_with(pki.dir(), &pki.pki, None, &options);
    let settings = smtp(server.port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_554");
    let path = pki.dir().join("probe.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    let now = OffsetDateTime::now_utc();
    queue_for(&mut store, now, &["ops@example.com"]);

    let summary = flush_outbox(&mut store, &settings, now).await.unwrap();
    assert_eq!((summary.sent, summary.given_up, summary.failed), (0, 1, 0));
    for hours in [1u64, 24, 24 * 30] {
        let later = now + Duration::from_secs(hours * 3600);
        let again = flush_outbox(&mut store, &settings, later).await.unwrap();
        assert_eq!(
            again,
            probe::notify::outbox::FlushSummary::default(),
            "{hours} h later"
        );
    }
    let (reason, attempts): (String, i64) = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT last_error, attempts FROM outbox", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(reason.contains("554"), "{reason}");
    assert_eq!(attempts, 1, "tried once");
}

/// A refused sender (553 at MAIL FROM) is about our settings, the same for every message: the
/// alerts wait, none is given up, and the pass stops at the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_sender_holds_the_queue_instead_of_throwing_it_away() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_553", PASSWORD);
    let options = SmtpOptions {
        reject_sender: true,
        ..SmtpOptions::default()
    };
    let server = SmtpServer::start_with(pki.dir(), &pki.pki, None, &options);
    let settings = smtp(server.port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_553");
    let mut store = SqliteStore::open(&pki.dir().join("probe.sqlite")).unwrap();
    let now = OffsetDateTime::now_utc();
    queue_for(&mut store, now, &["a@example.com", "b@example.com"]);

    let summary = flush_outbox(&mut store, &settings, now).await.unwrap();
    assert_eq!(
        (
            summary.sent,
            summary.failed,
            summary.deferred,
            summary.given_up
        ),
        (0, 1, 1, 0)
    );
    assert_eq!(
        store
            .due_messages(now + Duration::from_secs(3600))
            .unwrap()
            .len(),
        2,
        "both still queued"
    );
}

/// A cause that flips A → B → A → B within one incident: the opening and three change mails, in
/// order, each exactly once (the second "changed to B" has a key of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cause_flipping_back_and_forth_sends_every_change_once_in_order() {
    let pki = TempPki::new();
    std::env::set_var("PROBE_TEST_SMTP_PASSWORD_FLIP", PASSWORD);
    let server = SmtpServer::start(pki.dir(), &pki.pki, None);
    let settings = smtp(server.port, &pki.ca, "PROBE_TEST_SMTP_PASSWORD_FLIP");
    let mut store = SqliteStore::open(&pki.dir().join("probe.sqlite")).unwrap();
    let policy = probe::config::Alerts {
        to: vec!["ops@example.com".into()],
        confirm_retries: 0,
        retry_spacing: Duration::from_secs(1),
        confirm_runs: 1,
        recover_runs: 2,
        quorum: 1,
        remind_every: Duration::from_secs(24 * 3600),
        warning: Default::default(),
        intermittent: Default::default(),
        group: true,
        zone: Default::default(),
    };
    let a = report("edge_stale_fastcgi_socket");
    let b = report("edge_blocked_refused");
    let start = OffsetDateTime::now_utc();
    let mut state = store.alert_state("example.com").unwrap();
    for (minute, run) in [&a, &b, &a, &b].into_iter().enumerate() {
        let at = start + Duration::from_secs(60 * minute as u64);
        let verdict = probe::alert::RunVerdict {
            at,
            diagnosis: run.diagnosis.clone(),
            in_maintenance: false,
        };
        let (next, notifications) = probe::alert::step(&state, &verdict, &policy);
        let messages: Vec<_> = notifications
            .iter()
            .flat_map(|n| render("example.com", &run.target, n, &policy.to))
            .collect();
        assert_eq!(messages.len(), 1, "run {minute}: one notification");
        store
            .record_run(&RunRecord {
                site: "example.com",
                at,
                report: run,
                state: &next,
                messages: &messages,
            })
            .unwrap();
        state = next;
        let summary = flush_outbox(&mut store, &settings, at).await.unwrap();
        assert_eq!(summary.sent, 1, "run {minute}: delivered at once");
    }
    let later = start + Duration::from_secs(3600);
    assert_eq!(
        flush_outbox(&mut store, &settings, later)
            .await
            .unwrap()
            .sent,
        0
    );

    let subjects: Vec<String> = server
        .messages()
        .iter()
        .map(|m| {
            let unfolded = m.replace("\r\n ", " ").replace("\n ", " ");
            unfolded
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let kinds: Vec<(&str, bool)> = subjects
        .iter()
        .map(|s| {
            let kind = s.split(']').next().unwrap_or_default();
            (kind, s.contains("(origin_blocks_edge"))
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("[DOWN", false),
            ("[CHANGED", true),
            ("[CHANGED", false),
            ("[CHANGED", true),
        ],
        "{subjects:#?}"
    );
    let ids: std::collections::HashSet<String> = server
        .messages()
        .iter()
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Message-ID: "))
                .map(str::to_string)
        })
        .collect();
    assert_eq!(ids.len(), 4, "four distinct Message-IDs");
}

/// The mail of an incident the pool's own status page decided quotes it: the witness line in
/// the evidence, the URIs holding the workers in the summary.
#[test]
fn a_mail_quotes_what_the_status_page_said() {
    let report = report("lab_fpm_saturated_witnessed");
    let notification = Notification::Opened {
        severity: probe::alert::Severity::Down,
        incident: 1,
        episode: 0,
        diagnosis: report.diagnosis.clone(),
    };
    let message = render(
        "lab",
        &report.target,
        &notification,
        &["ops@example.com".to_string()],
    )
    .remove(0);
    let body = &message.body_text;
    // The fixture's diagnosis was recorded with the witness words of its day: the mail quotes
    // the recorded words, whatever today's describe() would say.
    assert!(
        body.contains("PHP-FPM pool www: 3 of 3 workers busy, 0 idle, listen queue 1")
            && body.contains("holding them longest: /sleep.php"),
        "{body}"
    );
    assert!(
        message.subject.contains("PHP-FPM has no free worker"),
        "{}",
        message.subject
    );
}
