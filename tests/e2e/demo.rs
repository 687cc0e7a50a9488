//! The demo is an end-to-end test: the whole flow on the real node, checked.

use rotor_core::contract::{BinarySource, COPY_CONTAINER};
use rotor_e2e::demo::{DemoReport, FIRST, Family, ROTATED, app_line, run_demo};

#[tokio::test]
async fn the_demo_runs_the_whole_flow_on_a_real_node() -> anyhow::Result<()> {
    rotor_testkit::install_crypto_provider();
    let report = run_demo(Family::Vault).await?;
    check(&report);
    assert!(
        report
            .event_note
            .contains("secret/data/demo/db version 1 -> 2"),
        "{}",
        report.event_note
    );
    Ok(())
}

/// `scripts/demo.sh aws`: the pod's token -> STS -> Secrets Manager -> exec, on the real node,
/// and one rollout when the secret gets a new version.
#[tokio::test]
async fn the_aws_demo_reads_secrets_manager_with_the_pods_identity_and_rolls_once()
-> anyhow::Result<()> {
    rotor_testkit::install_crypto_provider();
    let report = run_demo(Family::Aws).await?;
    check(&report);
    assert!(
        report
            .event_note
            .contains("arn:aws:secretsmanager:eu-west-1:123456789012:secret:demo/db")
            && report.event_note.contains("has a new AWSCURRENT version"),
        "{}",
        report.event_note
    );
    Ok(())
}

/// What both demos show: the value read in the first pod, the app as PID 1, one rollout, the
/// new value in the new pod, never a value in a log.
fn check(report: &DemoReport) {
    assert!(
        report.first_log.contains(&app_line(FIRST)),
        "the app in the first pod saw version 1 from OpenBao:\n{}",
        report.first_log
    );
    assert!(
        report.first_log.contains("app: pid=1 "),
        "the app runs as PID 1 (rotor-init exec'd it):\n{}",
        report.first_log
    );
    assert!(
        report.rotated_log.contains(&app_line(ROTATED)),
        "the pod of the new ReplicaSet saw version 2:\n{}",
        report.rotated_log
    );
    for log in [&report.first_log, &report.rotated_log] {
        assert!(
            !log.contains(FIRST) && !log.contains(ROTATED),
            "neither rotor-init nor the app prints the value:\n{log}"
        );
        assert!(
            log.contains("app: rotor-vars=0 literal-references=0"),
            "{log}"
        );
    }
    // The pod got rotor-init the way the demo said: no init container from an image volume.
    let expected_inits: Vec<String> = match report.binary_source {
        BinarySource::ImageVolume => vec![],
        BinarySource::Copy => vec![COPY_CONTAINER.to_string()],
    };
    assert_eq!(report.first_pod_init_containers, expected_inits);
    assert_eq!(report.replica_sets_before, 1);
    assert_eq!(
        report.replica_sets_after, 2,
        "the rotation rolled the Deployment once"
    );
    assert_eq!(
        report.pods_after,
        vec![report.rotated_pod.clone()],
        "the old pod {} is gone",
        report.first_pod
    );
    eprintln!(
        "demo: stack {:?}, total {:?}",
        report.stack_startup, report.total
    );
}
