//! Attempts that must leave the queue (a signature about to expire) and come back re-sent:
//! the events, the kept place, and how long it lasts. Paused clock.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bedrock_throttle::BoxError;
use bedrock_throttle::admit::{AdmissionLayer, Event, LeftQueue, Plan, Protocol};
use bedrock_throttle::budget::{Budget, Permit};
use bedrock_throttle::classify::Classification;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const WINDOW: Duration = Duration::from_secs(60);

/// A request with an identity across re-sent attempts, and maybe an instant to leave by.
#[derive(Debug, Clone)]
struct Signed {
    arrival: &'static str,
    leave_by: Option<Instant>,
}

/// The protocol of signed requests: one request each, no tokens.
#[derive(Debug, Clone, Copy)]
struct Signatures;

impl Protocol<Signed, &'static str, Infallible> for Signatures {
    type Key = ();
    type Memo = ();
    type Output = &'static str;

    fn plan(&self, request: &Signed) -> Plan<(), ()> {
        Plan::new((), 0)
            .with_leave_by(request.leave_by)
            .with_arrival(Some(Arc::from(request.arrival)))
    }

    fn settle(&self, response: &'static str, permit: Permit, _memo: ()) -> &'static str {
        permit.settle(0);
        response
    }

    fn classify(&self, _result: Result<&&'static str, &Infallible>) -> Classification {
        Classification::success()
    }
}

type Events = Arc<Mutex<Vec<String>>>;

/// A service admitting one request per minute, its events written down.
fn one_per_minute() -> (
    impl Service<Signed, Response = &'static str, Error = BoxError, Future: Send> + Clone,
    Events,
) {
    let budget: Budget<()> = Budget::builder()
        .requests(1)
        .window(WINDOW)
        .build()
        .unwrap();
    let events: Events = Arc::default();
    let seen = Arc::clone(&events);
    let observer = move |_: &(), event: Event<'_>| {
        let line = match event {
            Event::Admitted { waited, .. } => format!("admitted after {}s", waited.as_secs()),
            Event::LeftQueue { waited } => format!("left after {}s", waited.as_secs()),
            Event::Refused { error, .. } => format!("refused: {error}"),
            _ => return,
        };
        seen.lock().unwrap().push(line);
    };
    let layer = AdmissionLayer::new(budget, Signatures).observe(observer);
    let svc = layer.layer(service_fn(|request: Signed| async move {
        Ok::<_, Infallible>(request.arrival)
    }));
    (svc, events)
}

fn signed(arrival: &'static str, leave_in: Option<Duration>) -> Signed {
    Signed {
        arrival,
        leave_by: leave_in.map(|d| Instant::now() + d),
    }
}

/// An attempt that must leave fails with `LeftQueue` (its place kept) and the observer sees
/// `Event::LeftQueue`; the re-sent attempt takes the place back and is admitted ahead of a
/// later arrival, even though it waits far longer than a place is kept for an attempt that
/// does not come back (15 s).
#[tokio::test(start_paused = true)]
async fn a_place_taken_back_lasts_as_long_as_its_attempt_waits() {
    let (svc, events) = one_per_minute();
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(signed("a", None)).await.unwrap(), "a");

    let error = svc
        .clone()
        .oneshot(signed("b", Some(Duration::from_secs(1))))
        .await
        .unwrap_err();
    let left = error.downcast_ref::<LeftQueue>().expect("LeftQueue");
    assert!(left.kept_place());
    assert_eq!(left.waited(), Duration::from_secs(1));

    // The re-sent attempt, then a request that arrives after it.
    let resent = tokio::spawn(svc.clone().oneshot(signed("b", None)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = tokio::spawn(svc.clone().oneshot(signed("c", None)));

    assert_eq!(resent.await.unwrap().unwrap(), "b");
    assert_eq!(
        start.elapsed(),
        WINDOW,
        "b was admitted when the window freed"
    );
    assert_eq!(later.await.unwrap().unwrap(), "c");
    assert_eq!(start.elapsed(), WINDOW * 2, "c came after b");
    assert_eq!(
        *events.lock().unwrap(),
        [
            "admitted after 0s",
            "left after 1s",
            // The waiter kept for b, admitted 60 s after b arrived (its re-sent attempt
            // arrived at 1 s).
            "admitted after 59s",
            "admitted after 118s",
        ]
    );
}

/// A place nobody comes back for within 15 s is given up without a trace: the late re-sent
/// attempt queues anew, behind those who came in the meantime.
#[tokio::test(start_paused = true)]
async fn a_place_nobody_came_back_for_is_given_up() {
    let (svc, events) = one_per_minute();
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot(signed("a", None)).await.unwrap(), "a");
    let error = svc
        .clone()
        .oneshot(signed("b", Some(Duration::from_secs(1))))
        .await
        .unwrap_err();
    assert!(error.is::<LeftQueue>());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let c = tokio::spawn(svc.clone().oneshot(signed("c", None)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = tokio::spawn(svc.clone().oneshot(signed("b", None)));
    assert_eq!(c.await.unwrap().unwrap(), "c");
    assert_eq!(start.elapsed(), WINDOW);
    assert_eq!(b.await.unwrap().unwrap(), "b");
    assert_eq!(start.elapsed(), WINDOW * 2, "b lost its place to c");
    assert_eq!(events.lock().unwrap().len(), 4, "{events:?}");
}
