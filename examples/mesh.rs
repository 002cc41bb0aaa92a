//! A mesh of three services in one binary: run it as `inventory`, `orders`
//! or `billing` (set by `WEBMESH_NAME`), as many times as you like.
//!
//! ```sh
//! WEBMESH_NAME=inventory WEBMESH_ADDR=127.0.0.1:4270 cargo run --example mesh
//! WEBMESH_NAME=orders WEBMESH_ADDR=127.0.0.1:4271 WEBMESH_PEERS=ws://127.0.0.1:4270 cargo run --example mesh
//! WEBMESH_NAME=billing WEBMESH_ADDR=127.0.0.1:4272 WEBMESH_PEERS=ws://127.0.0.1:4270 cargo run --example mesh
//! webmesh nodes ws://127.0.0.1:4270
//! webmesh call ws://127.0.0.1:4270 /orders/place '{"sku": "tea", "quantity": 2}'
//! ```
//!
//! Placing an order on `orders` reserves stock on an `inventory` node and
//! charges on a `billing` node, through the mesh, then publishes
//! `/orders/placed` for subscribers on any node.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use webmesh::extract::Path;
use webmesh::{CallError, Mesh, Router, Server, State};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    sku: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Placed {
    order: u64,
    sku: String,
    quantity: u32,
    total_cents: u64,
    /// The nodes that took part, by id.
    orders: String,
    inventory: String,
    billing: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Done {
    node: String,
    cents: u64,
}

// inventory: how many of an item are left, and reserving some.

async fn stock(State(mesh): State<Mesh>, Path(sku): Path<String>) -> serde_json::Value {
    serde_json::json!({ "sku": sku, "available": 1000, "node": mesh.id() })
}

async fn reserve(State(mesh): State<Mesh>, order: Order) -> Result<Done, CallError> {
    if order.quantity == 0 || order.quantity > 1000 {
        return Err(CallError::new("out_of_stock", format!("cannot reserve {} of {}", order.quantity, order.sku)));
    }
    Ok(Done { node: mesh.id(), cents: 0 })
}

// billing: the price of an order.

async fn charge(State(mesh): State<Mesh>, order: Order) -> Done {
    Done { node: mesh.id(), cents: 250 * u64::from(order.quantity) }
}

// orders: places an order through the other two services.

static NEXT_ORDER: AtomicU64 = AtomicU64::new(1);

async fn place(State(mesh): State<Mesh>, order: Order) -> Result<Placed, CallError> {
    let unavailable = |e: webmesh::Error| CallError::new("unavailable", e.to_string());
    let reserved: Done = mesh.call("/inventory/reserve", &order).await.map_err(unavailable)?;
    let charged: Done = mesh.call("/billing/charge", &order).await.map_err(unavailable)?;
    let placed = Placed {
        order: NEXT_ORDER.fetch_add(1, Ordering::Relaxed),
        sku: order.sku,
        quantity: order.quantity,
        total_cents: charged.cents,
        orders: mesh.id(),
        inventory: reserved.node,
        billing: charged.node,
    };
    // Subscribers of any node receive it: `webmesh subscribe URL /orders/placed`.
    let _ = mesh.publish("/orders/placed", &placed);
    Ok(placed)
}

fn routes(service: &str) -> Option<Router> {
    match service {
        "inventory" => Some(Router::new().on("/inventory/stock/{sku}", stock).on("/inventory/reserve", reserve)),
        "billing" => Some(Router::new().on("/billing/charge", charge)),
        "orders" => Some(Router::new().on("/orders/place", place)),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())).init();
    let service = std::env::var("WEBMESH_NAME").unwrap_or_else(|_| "inventory".into());
    let Some(router) = routes(&service) else {
        return Err(format!("WEBMESH_NAME must be inventory, orders or billing, not {service:?}").into());
    };
    // WEBMESH_ADDR, WEBMESH_PEERS and the timings come from the environment
    // or their defaults.
    let server = Server::builder().registered_handlers(false).router(router);
    let mesh = Mesh::builder().server(server).name(service).start().await?;
    println!("{} is node {} at {}", mesh.name(), mesh.id(), mesh.url());
    tokio::signal::ctrl_c().await?;
    mesh.shutdown().await;
    Ok(())
}
