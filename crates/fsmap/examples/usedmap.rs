//! Prints the used map of an image file: `cargo run -p fsmap --example usedmap -- IMG`.

fn main() {
    let path = std::env::args().nth(1).expect("usage: usedmap IMAGE");
    let f = std::fs::File::open(&path).expect("open image");
    let size = f.metadata().expect("stat image").len();
    let m = fsmap::used_map(&f, size).expect("read image");
    println!("fs: {:?}", m.fs);
    println!("method: {:?}", m.method);
    println!(
        "used: {} bytes in {} extents",
        m.used_bytes,
        m.extents.len()
    );
    if std::env::args().any(|a| a == "-v") {
        for e in &m.extents {
            println!("{:>14} {:>12}", e.offset, e.len);
        }
    }
}
