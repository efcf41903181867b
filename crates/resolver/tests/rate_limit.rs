//! Each source address gets a token bucket of requests; beyond it, 429 with a JSON error and
//! `Retry-After`.

use crate::common;

use common::*;
use peerchannel::resolver::api::error_code;
use peerchannel::resolver::{Resolver, ResolverError};
use peerchannel_resolver::{RateLimit, ResolverConfig};
use reqwest::StatusCode;

/// Requests to send before giving up on seeing the limit. At one token per second, the
/// bucket of 3 runs dry after a few unless each request took most of a second.
const ATTEMPTS: usize = 50;

#[tokio::test]
async fn a_burst_beyond_the_bucket_is_refused_per_address() {
    let config = ResolverConfig {
        rate_limit: RateLimit::new(1, 3),
        ..ResolverConfig::default()
    };
    let server = start(config).await;
    let url = format!("{}/v1/meshes/m/peers", server.url());
    let busy = raw_from([127, 0, 0, 1]);

    let mut refused = None;
    for attempt in 0..ATTEMPTS {
        let response = busy.get(&url).send().await.unwrap();
        if attempt < 3 {
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "request {attempt} is within the burst"
            );
        }
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the rate limit never applied");
    let retry_after: u64 = refused.headers()[reqwest::header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let (_, body) = error_of(refused).await;
    assert_eq!(body.code, error_code::RATE_LIMITED);
    assert_eq!(body.retry_after_s, Some(retry_after));

    // The real client reports it as such.
    let err = client(&server).resolve(&mesh("m"), 5).await.unwrap_err();
    assert!(
        matches!(
            err,
            ResolverError::RateLimited {
                retry_after: Some(_),
                ..
            }
        ),
        "{err:?}"
    );

    // Another address is not affected, and sees the refusals counted.
    let calm = raw_from([127, 0, 0, 2]);
    assert_eq!(
        calm.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let metrics = calm
        .get(format!("{}/metrics", server.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"peerchannel_resolver_rejections_total{reason="rate_limited"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/v1/meshes/{mesh}/peers",method="GET",status="429""#),
        "{metrics}"
    );

    // The bucket refills: eventually the busy address is served again.
    eventually("the bucket to refill", || async {
        (busy.get(&url).send().await.unwrap().status() == StatusCode::OK).then_some(())
    })
    .await;
}
