//! Events across the mesh: to every node with interest, in order, once.

use serde_json::{json, Value};
use webmesh::{Client, Router};

use super::{all_up, drain, ms, probe, Transport};
use crate::common::until;

/// An event reaches each subscriber of every node once and in order, both
/// ways, and crosses to the nodes whose subscribers want it only; that
/// interest follows unsubscribes and disconnects.
pub async fn events_cross_the_mesh_in_order_once_and_only_where_subscribers_want_them(transport: Transport) {
    let a = transport.node(0, "a", Router::new(), None).await;
    let b = transport.node(1, "b", Router::new(), Some(&a)).await;
    let c = transport.node(2, "c", Router::new(), Some(&a)).await;
    for n in [&a, &b, &c] {
        until("3 nodes up", 20, || all_up(n, 3)).await;
    }
    let others = [&b, &c];
    assert_eq!(transport.others_reached(&a, 0, &others, "/news/probe"), 0, "nobody beyond a wants /news");

    let on_c = Client::connect(&c.url()).await.unwrap();
    let mut news_c = on_c.subscribe::<Value>("/news/*").await.unwrap();
    let on_b = Client::connect(&b.url()).await.unwrap();
    // Two subscriptions of one connection, both matching: the connection
    // receives each event once for each.
    let mut news_b = on_b.subscribe::<Value>("/news/*").await.unwrap();
    let mut sport_b = on_b.subscribe::<Value>("/news/sport").await.unwrap();
    let on_a = Client::connect(&a.url()).await.unwrap();
    let mut news_a = on_a.subscribe::<Value>("/news/{*rest}").await.unwrap();
    probe(&a, "/news/probe", &mut news_c).await;
    probe(&a, "/news/probe", &mut news_b).await;
    drain(&mut sport_b, ms(100)).await;
    drain(&mut news_a, ms(100)).await;
    until("a's events on /news reach b and c", 10, || transport.others_reached(&a, 1, &others, "/news/probe") == 2)
        .await;
    assert_eq!(transport.others_reached(&a, 0, &others, "/weather/probe"), 0, "no one wants the weather");

    for seq in 0..200 {
        a.publish("/news/sport", &seq).unwrap();
    }
    let expected: Vec<Value> = (0..200).map(Value::from).collect();
    for (name, subscription) in [("c", &mut news_c), ("b", &mut news_b), ("b exact", &mut sport_b), ("a", &mut news_a)]
    {
        let (events, lost) = drain(subscription, ms(500)).await;
        assert_eq!(events, expected, "subscriber on {name}: all, in order, once");
        assert_eq!(lost, 0, "{name}");
    }
    // And the other way: a publish on c reaches a and b, and c's own once.
    c.publish("/news/other", &"from c").unwrap();
    assert_eq!(drain(&mut news_a, ms(300)).await.0, vec![json!("from c")]);
    assert_eq!(drain(&mut news_b, ms(300)).await.0, vec![json!("from c")]);
    assert_eq!(drain(&mut news_c, ms(300)).await.0, vec![json!("from c")], "c's own subscriber, once");

    // Interest follows unsubscribes and disconnects.
    news_c.unsubscribe().await;
    until("a's events reach b only", 10, || transport.others_reached(&a, 1, &others, "/news/probe") == 1).await;
    drop((news_b, sport_b));
    on_b.close().await;
    until("a's events reach no other node", 10, || transport.others_reached(&a, 1, &others, "/news/probe") == 0).await;
    // And a's own subscriber still has them.
    a.publish("/news/last", &"last").unwrap();
    assert_eq!(drain(&mut news_a, ms(300)).await.0, vec![json!("last")]);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
