//! Products and bids: `POST /api/products`, `GET /api/products/{id}`,
//! `POST /api/products/{id}/bids` (202: durable, decided exactly once),
//! `GET /api/bids/{id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::access::{self, Caller};
use super::extract::{stored_text, AppJson, QueryPairs};
use crate::bids::{new_id, Bid, Product};
use crate::error::ApiError;
use crate::event::now_ms;
use crate::state::AppState;

/// The body of `POST /api/products`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    #[serde(default)]
    tenant: Option<String>,
    seller_id: String,
    title: String,
    starting_price: i64,
    min_increment: i64,
    /// ms since the epoch.
    #[serde(default)]
    ends_at: Option<i64>,
    /// A bid this close to the end extends it by as much (0: off).
    #[serde(default)]
    anti_snipe_secs: Option<i64>,
}

/// Creates a product (the seller's token or the admin token).
#[utoipa::path(
    post,
    path = "/api/products",
    operation_id = "createProduct",
    tag = "products"
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(b): AppJson<NewProduct>,
) -> Result<Response, ApiError> {
    state.rate.check(caller.rate_key(), &state.metrics)?;
    let tenant = access::tenant(&state, &caller, b.tenant.as_deref(), "tenant").await?;
    access::validate_user_id(&b.seller_id, "seller_id")?;
    access::may_act_as(&b.seller_id, &caller)?;
    let title = b.title.trim();
    stored_text(title, "title")?;
    if title.is_empty() || title.chars().count() > 200 {
        return Err(ApiError::invalid(
            "invalid_title",
            "`title` must be 1-200 characters",
        ));
    }
    if b.starting_price < 1 {
        return Err(ApiError::invalid(
            "invalid_starting_price",
            "`starting_price` must be a positive integer (minor units)",
        ));
    }
    if b.min_increment < 1 {
        return Err(ApiError::invalid(
            "invalid_min_increment",
            "`min_increment` must be a positive integer (minor units)",
        ));
    }
    let now = now_ms();
    if b.ends_at.is_some_and(|e| e <= now) {
        return Err(ApiError::invalid(
            "invalid_ends_at",
            "`ends_at` must be in the future (ms since the epoch)",
        ));
    }
    let anti_snipe_ms = b.anti_snipe_secs.unwrap_or(0);
    if !(0..=3600).contains(&anti_snipe_ms) {
        return Err(ApiError::invalid(
            "invalid_anti_snipe_secs",
            "`anti_snipe_secs` must be between 0 and 3600",
        ));
    }
    let p = Product {
        id: new_id("p"),
        tenant: tenant.slug,
        seller_id: b.seller_id,
        title: title.to_string(),
        starting_price: b.starting_price,
        min_increment: b.min_increment,
        anti_snipe_ms: anti_snipe_ms * 1000,
        ends_at: b.ends_at,
        status: crate::bids::ProductStatus::Open,
        current_bid: None,
        leader: None,
        bid_count: 0,
        version: 1,
        created_at: now,
    };
    state.backend.bids.create_product(&p).await?;
    Ok((StatusCode::CREATED, axum::Json(p)).into_response())
}

/// Looks a product up within the request's tenant (another tenant's is 404).
pub async fn visible_product(
    state: &AppState,
    caller: &Caller,
    id: &str,
    requested: Option<&str>,
) -> Result<Product, ApiError> {
    let unknown =
        || ApiError::not_found("unknown_product", format!("product {id:?} does not exist"));
    // Ids are made by the server (`p_…`); what could not be one is not looked up.
    if !crate::auth::valid_user_id(id) {
        return Err(unknown());
    }
    let p = state.backend.bids.product(id).await?.ok_or_else(unknown)?;
    let tenant = match caller {
        Caller::User(c) => Some(c.tenant.as_str()),
        Caller::Service(c) => Some(c.tenant.as_str()),
        _ => requested,
    };
    if tenant.is_some_and(|t| t != p.tenant) {
        return Err(unknown());
    }
    Ok(p)
}

/// A product's current state.
#[utoipa::path(
    get,
    path = "/api/products/{id}",
    operation_id = "getProduct",
    tag = "products"
)]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    q: QueryPairs,
) -> Result<Response, ApiError> {
    let p = visible_product(&state, &caller, &id, q.get("tenant")).await?;
    Ok(axum::Json(p).into_response())
}

/// The body of `POST /api/products/{id}/bids`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewBid {
    bidder_id: String,
    amount: i64,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Queues a bid: `202 {bid_id, status}` once it is stored.
#[utoipa::path(
    post,
    path = "/api/products/{id}/bids",
    operation_id = "placeBid",
    tag = "products"
)]
pub async fn bid(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
    AppJson(b): AppJson<NewBid>,
) -> Result<Response, ApiError> {
    if caller == Caller::Anonymous {
        return Err(ApiError::unauthorized("bidding needs the bidder's token"));
    }
    access::validate_user_id(&b.bidder_id, "bidder_id")?;
    access::may_act_as(&b.bidder_id, &caller)?;
    state.rate.check(caller.rate_key(), &state.metrics)?;
    if b.amount < 1 {
        return Err(ApiError::invalid(
            "invalid_amount",
            "`amount` must be a positive integer (minor units)",
        ));
    }
    if let Some(k) = &b.idempotency_key {
        stored_text(k, "idempotency_key")?;
        if k.is_empty() || k.len() > 128 {
            return Err(ApiError::invalid(
                "invalid_idempotency_key",
                "`idempotency_key` must be 1-128 characters",
            ));
        }
    }
    let p = visible_product(&state, &caller, &id, None).await?;
    let bid = Bid {
        id: new_id("b"),
        tenant: p.tenant.clone(),
        product_id: p.id.clone(),
        bidder_id: b.bidder_id,
        amount: b.amount,
        idempotency_key: b.idempotency_key,
        status: crate::bids::BidStatus::Queued,
        reason: None,
        decided_by: None,
        created_at: now_ms(),
        decided_at: None,
    };
    let (stored, created) = state.backend.bids.submit_bid(&bid).await?;
    if created {
        state.metrics.bids_submitted.inc();
        state.bid_queue.wake(&p.id).await;
    }
    let body = serde_json::json!({ "bid_id": stored.id, "status": stored.status });
    Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response())
}

/// A bid and its status (the bidder or the admin).
#[utoipa::path(
    get,
    path = "/api/bids/{id}",
    operation_id = "getBid",
    tag = "products"
)]
pub async fn get_bid(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let unknown = || ApiError::not_found("unknown_bid", format!("bid {id:?} does not exist"));
    // Ids are made by the server (`b_…`); what could not be one is not looked up.
    if !crate::auth::valid_user_id(&id) {
        return Err(unknown());
    }
    // Answers name nobody: a stranger learns neither who placed a bid nor,
    // without a token, whether it exists.
    match &caller {
        Caller::Anonymous => {
            return Err(ApiError::unauthorized(
                "a bid's status needs its bidder's token",
            ))
        }
        Caller::Service(_) => {
            return Err(ApiError::forbidden(
                "a publisher token cannot read a bid's status",
            ))
        }
        Caller::Admin | Caller::User(_) => {}
    }
    let bid = state.backend.bids.bid(&id).await?.ok_or_else(unknown)?;
    match &caller {
        Caller::User(c) if c.tenant != bid.tenant => return Err(unknown()),
        Caller::User(c) if c.sub != bid.bidder_id => {
            return Err(ApiError::forbidden(
                "only its bidder may read a bid's status",
            ))
        }
        _ => {}
    }
    Ok(axum::Json(bid).into_response())
}
