//! (d): authenticated `GET /v1/account/<id>` requests/s against the node, and the same
//! requests against a hello-world hyper server, from the same client.

use webhookd::bench::client::Account;
use webhookd::bench::load::{api_headers, get_rate, HelloServer, LoadReport, LoadShape};
use webhookd::bench::report::per_s;
use webhookd::bench::BenchResult;

/// The node's and the hello-world server's request rates.
pub(crate) async fn read_rates(
    node_url: &str,
    owner: &Account,
    hello: &HelloServer,
    shape: LoadShape,
) -> BenchResult<(LoadReport, LoadReport)> {
    let read_headers = api_headers(&owner.username, &owner.api_key)?;
    let node_read = get_rate(
        &format!("{node_url}/v1/account/{}", owner.id),
        read_headers.clone(),
        shape,
    )
    .await?;
    let hello_read = get_rate(&format!("http://{}/", hello.addr()), read_headers, shape).await?;
    println!(
        "(d) GET /v1/account/<id>: {} vs hello-world {}",
        per_s(node_read.per_second),
        per_s(hello_read.per_second)
    );
    Ok((node_read, hello_read))
}
