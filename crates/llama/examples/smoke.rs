use r2_llama::{LlamaCppBackend, LlamaOptions};
use r2_pool::{ChatMessage, GenRequest};

fn main() {
    let path = std::env::args().nth(1).expect("path");
    let q = std::env::args().nth(2).unwrap_or_else(|| {
        "What is 17 * 23? Think step by step and end with ANSWER: <number>".into()
    });
    let b = LlamaCppBackend::load(
        "m",
        std::path::Path::new(&path),
        LlamaOptions {
            n_ctx: 4096,
            threads: 2,
            reuse_prefix: false,
            parallel: 1,
        },
    )
    .unwrap();
    let req = GenRequest::new(vec![ChatMessage::user(q)], 256);
    for _ in 0..2 {
        let (r, s) = b.generate_blocking(&req).unwrap();
        println!("{:?}\n{:?} conf={:?}", r.text, s, r.confidence());
        println!(
            "in={} out={} finish={:?}",
            r.input_tokens, r.output_tokens, r.finish
        );
    }
}
