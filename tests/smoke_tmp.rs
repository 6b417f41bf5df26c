use ferry::config::Config;
use ferry::engine::{Engine, Prompt};

#[actix_rt::test]
async fn smoke() {
    let config = Config::default();
    let engine = Engine::start(&config).unwrap();
    let prompts: Vec<Prompt> = (0..1000).map(|i| Prompt::text(format!("p{i}"))).collect();
    let t = std::time::Instant::now();
    let out = engine.submit("bulk", prompts).await.unwrap().collect().await;
    println!("bulk 1000 in {:?}", t.elapsed());
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.as_ref().unwrap().text, format!("mock answer to: p{i}"));
    }
    let t = std::time::Instant::now();
    let prompts: Vec<Prompt> = (0..10).map(|i| Prompt::text(format!("h{i}"))).collect();
    let out = engine.submit("high", prompts).await.unwrap().collect().await;
    println!("high 10 in {:?}", t.elapsed());
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.as_ref().unwrap().text, format!("mock answer to: h{i}"));
    }
    println!(
        "{:#?}",
        engine
            .snapshot()
            .await
            .unwrap()
            .recent_batches
            .iter()
            .map(|b| (b.lane.to_string(), b.size, b.duration))
            .collect::<Vec<_>>()
    );
}
