//! The README's first command: the whole rotor flow on the local control plane.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rotor_testkit::install_crypto_provider();
    rotor_e2e::demo::run_demo().await.map(drop)
}
