//! Measures the native walk without Python in the way.
//!
//! ```text
//! cargo run --release --example walkbench -- generate DIR [LIBRARIES]   # LIBRARIES × 2,500 media files
//! cargo run --release --example walkbench -- walk DIR [THREADS,...] [REPEAT] [cold]
//! ```
//!
//! `generate` writes a media-library-shaped tree: per library 50 shows × 5 seasons, each season
//! 10 episodes (`.mkv`, 1 KiB) plus an `.nfo`, a `.jpg`, two `.srt` and an `@eaDir` thumbnail
//! directory; `walk` reports files/s and dirs/s for each thread count (best of REPEAT) and the CPU
//! time the process spent. The cache is warmed first unless `cold` is given (the caller then
//! provides a cold cache, e.g. a freshly mounted file system).

use std::time::Instant;

use _native::walk::{Next, Walk, WalkOptions};

fn generate(dir: &str, libraries: usize) -> std::io::Result<()> {
    let episode = vec![b'x'; 1024];
    for library in 0..libraries {
        for show in 0..50 {
            for season in 1..=5 {
                let season_dir = format!("{dir}/lib{library}/Show {show}/Season {season:02}");
                std::fs::create_dir_all(format!("{season_dir}/@eaDir"))?;
                std::fs::write(format!("{season_dir}/@eaDir/thumb.jpg"), b"t")?;
                for e in 1..=10 {
                    let stem = format!("{season_dir}/Show {show} - S{season:02}E{e:02}");
                    std::fs::write(format!("{stem}.mkv"), &episode)?;
                    if e <= 2 {
                        std::fs::write(format!("{stem}.en.srt"), b"s")?;
                    }
                }
                std::fs::write(format!("{season_dir}/season.nfo"), b"n")?;
                std::fs::write(format!("{season_dir}/poster.jpg"), b"p")?;
            }
        }
    }
    Ok(())
}

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` is a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    // SAFETY: getrusage filled it.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn walk(dir: &str, threads: usize) -> (u64, u64, f64, f64) {
    let cpu_before = cpu_seconds();
    let options = WalkOptions {
        threads,
        ..WalkOptions::default()
    };
    let start = Instant::now();
    let walk = Walk::start(vec![dir.as_bytes().to_vec()], options).expect("walk starts");
    let mut errors = 0;
    loop {
        match walk.next_batch(std::time::Duration::from_secs(60)) {
            Next::Batch(batch) => errors += batch.errors.len(),
            Next::Timeout => panic!("walk stalled"),
            Next::Over => break,
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(errors, 0, "walk errors");
    let stats = walk.stats();
    drop(walk);
    (stats.files, stats.dirs, seconds, cpu_seconds() - cpu_before)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("generate") => {
            let libraries = args.get(2).map_or(4, |n| n.parse().expect("LIBRARIES"));
            generate(&args[1], libraries).expect("tree written");
        }
        Some("walk") => {
            let threads: Vec<usize> = args.get(2).map_or(vec![1, 2, 4, 8, 16], |list| {
                list.split(',')
                    .map(|n| n.parse().expect("THREADS"))
                    .collect()
            });
            let repeat = args.get(3).map_or(5, |n| n.parse().expect("REPEAT"));
            if args.get(4).map(String::as_str) != Some("cold") {
                walk(&args[1], 2); // warm the cache
            }
            for t in threads {
                let runs: Vec<_> = (0..repeat).map(|_| walk(&args[1], t)).collect();
                let (files, dirs, _, _) = runs[0];
                let cpu = runs.iter().map(|r| r.3).fold(f64::MAX, f64::min);
                let best = runs.iter().map(|r| r.2).fold(f64::MAX, f64::min);
                let median = {
                    let mut times: Vec<f64> = runs.iter().map(|r| r.2).collect();
                    times.sort_by(f64::total_cmp);
                    times[times.len() / 2]
                };
                println!(
                    "threads={t:2} files={files} dirs={dirs} best={:.1} ms median={:.1} ms \
                     files/s={:.0} dirs/s={:.0} cpu={:.1} ms",
                    best * 1e3,
                    median * 1e3,
                    files as f64 / best,
                    dirs as f64 / best,
                    cpu * 1e3
                );
            }
        }
        _ => {
            eprintln!("usage: walkbench generate DIR [LIBRARIES] | walk DIR [THREADS,..] [REPEAT]")
        }
    }
}
