//! The baseline: `GET /` answers `200` with an empty body, nothing else.

use axum::Router;
use axum::routing::get;

fn main() {
    halos_bench::serve(Router::new().route("/", get(|| async {})));
}
