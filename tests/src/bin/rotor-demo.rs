//! The README's first command: the whole rotor flow on the local control plane.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rotor_testkit::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let family = rotor_e2e::demo::Family::from_args(&args)?;
    rotor_e2e::demo::run_demo(family).await.map(drop)
}
