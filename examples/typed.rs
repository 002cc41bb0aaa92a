//! Typed requests and replies with serde-derived structs, errors with codes,
//! and a client calling the server in the same program.
//!
//! ```sh
//! cargo run --example typed
//! ```

use serde::{Deserialize, Serialize};
use webmesh::{CallError, Client, Error, IntoCallError, Server};

#[derive(Debug, Serialize, Deserialize)]
struct Quote {
    item: String,
    quantity: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Price {
    item: String,
    total_cents: u64,
}

/// What can go wrong when pricing, and what callers see of it.
enum PriceError {
    UnknownItem(String),
    TooMany { max: u32 },
}

impl IntoCallError for PriceError {
    fn into_call_error(self) -> CallError {
        match self {
            PriceError::UnknownItem(item) => CallError::new("unknown_item", format!("we do not sell {item}")),
            PriceError::TooMany { max } => CallError::new("too_many", format!("at most {max} per order"))
                .with_data(serde_json::json!({ "max": max })),
        }
    }
}

#[webmesh::on("/price")]
fn price(quote: Quote) -> Result<Price, PriceError> {
    let unit = match quote.item.as_str() {
        "tea" => 350,
        "cake" => 420,
        other => return Err(PriceError::UnknownItem(other.to_owned())),
    };
    if quote.quantity > 10 {
        return Err(PriceError::TooMany { max: 10 });
    }
    Ok(Price { total_cents: unit * u64::from(quote.quantity), item: quote.item })
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = Server::builder().addr("127.0.0.1:0").bind().await?;
    let url = format!("ws://{}", server.local_addr());
    tokio::spawn(server.serve());

    let client = Client::connect(&url).await?;
    let price: Price = client.call("/price", &Quote { item: "tea".into(), quantity: 3 }).await?;
    println!("{} tea: {} cents", 3, price.total_cents);

    for quote in [Quote { item: "coffee".into(), quantity: 1 }, Quote { item: "cake".into(), quantity: 50 }] {
        match client.call::<Price>("/price", &quote).await {
            Err(Error::Handler(e)) => println!("{quote:?}: {} ({})", e.message(), e.code()),
            other => println!("{quote:?}: {other:?}"),
        }
    }
    // A payload of the wrong shape names the field.
    if let Err(e) = client.call::<Price>("/price", &serde_json::json!({"item": "tea", "quantity": -1})).await {
        println!("bad request: {e}");
    }
    Ok(())
}
