//! Times `pack` and `materialize` on a generated tree of 5,000 files
//! (sizes 1-64 KiB, 50 directories, a .gitignore), with rayon's default pool
//! and with one thread. Run: `cargo run --release -p shoal-snapshot --example pack_timing [FILES]`.

use std::time::Instant;

use shoal_snapshot::{BlobStore, materialize, pack};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: usize = std::env::args().nth(1).map_or(Ok(5_000), |n| n.parse())?;
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("tree");
    let mut bytes = 0usize;
    for i in 0..files {
        let sub = root.join(format!("dir{:02}", i % 50));
        std::fs::create_dir_all(&sub)?;
        // Deterministic sizes spread over 1..64 KiB.
        let size = 1024 + (i * 7919) % (63 * 1024);
        let content: Vec<u8> = (0..size).map(|j| ((i * 31 + j) % 251) as u8).collect();
        std::fs::write(sub.join(format!("file{i}.txt")), &content)?;
        bytes += size;
    }
    std::fs::write(root.join(".gitignore"), "*.log\n")?;
    println!(
        "tree: {files} files, {:.1} MiB",
        bytes as f64 / (1024.0 * 1024.0)
    );

    for threads in [0, 1] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let mut best = f64::MAX;
        for _ in 0..3 {
            let start = Instant::now();
            let packed = pool.install(|| pack(&root))?;
            best = best.min(start.elapsed().as_secs_f64());
            assert_eq!(packed.manifest.entries.len(), files + 1);
        }
        println!(
            "pack with {} rayon thread(s): best of 3 {:.0} ms",
            pool.current_num_threads(),
            best * 1000.0
        );
    }

    let packed = pack(&root)?;
    let store = BlobStore::open(dir.path().join("store"))?;
    let start = Instant::now();
    for (digest, source) in &packed.sources {
        let stored = store.put_file(source)?;
        assert_eq!(stored, *digest);
    }
    println!(
        "store {} blobs: {:.0} ms",
        packed.sources.len(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    let start = Instant::now();
    materialize(&packed.manifest, &store, &dir.path().join("out"))?;
    println!(
        "materialize: {:.0} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
