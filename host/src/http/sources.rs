//! `GET /admin/sources`: the configured sources, what each is doing on this
//! node and, for a shadow source, what it would have published (admin
//! token).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::doc::{Forbidden, HeadTooLarge, Unauthorized};
use super::extract::AdminRead;
use crate::sources::SourceView;
use crate::state::AppState;

/// What `GET /admin/sources` answers.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourcesView {
    /// Every configured source, in the config's order.
    pub sources: Vec<SourceView>,
}

/// The sources: state, counts, lag and, in shadow mode, per topic what
/// would have been published (counts and the first few examples).
#[utoipa::path(
    get,
    path = "/admin/sources",
    operation_id = "listSources",
    tag = "admin",
    summary = "The configured sources: state on this node, messages read, published and dead-lettered, lag; a shadow source's would-be events per topic.",
    description = "Counts are this node's since it started; in cluster mode the node holding a source's lease shows it `running`, the others `standby`.",
    security(("adminToken" = []), ("operatorToken" = [])),
    responses(
        (status = 200, description = "The sources.", body = SourcesView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 431, response = HeadTooLarge),
    )
)]
pub async fn list(State(state): State<AppState>, _reader: AdminRead) -> Response {
    axum::Json(SourcesView {
        sources: state.sources.views(),
    })
    .into_response()
}
