//! The demo is an end-to-end test: the whole flow, checked.

use rotor_e2e::demo::run_demo;

#[tokio::test]
async fn the_demo_runs_the_whole_flow() -> anyhow::Result<()> {
    rotor_testkit::install_crypto_provider();
    let report = run_demo().await?;
    assert_eq!(
        report.app_line, "shop: DB_PASSWORD=s3c*** (14 characters)",
        "the app saw the value from OpenBao"
    );
    assert!(
        !report.init_log.contains("s3cr3t"),
        "rotor-init never prints the value"
    );
    assert_eq!(report.replica_sets_before, 1);
    assert_eq!(
        report.replica_sets_after, 2,
        "the rotation rolled the Deployment once"
    );
    assert!(
        report
            .event_note
            .contains("secret/data/demo/db version 1 -> 2"),
        "{}",
        report.event_note
    );
    eprintln!(
        "demo: stack {:?}, total {:?}",
        report.stack_startup, report.total
    );
    Ok(())
}
