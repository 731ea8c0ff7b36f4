fn main() {
    println!("claude-ingest: under construction");
}
