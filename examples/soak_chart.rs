//! Draws the chart of a soak run from its CSV (`benches/soak.sh` calls this):
//! `cargo run --release --example soak_chart -- soak.csv soak.svg "title"`.
//! The CSV has a header line and the columns t_s, phase, rss_kib, open_files,
//! log_lines_per_s (further columns are ignored).

use sipedge::load::chart::{soak, SoakSample};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, csv, svg, rest @ ..] = args.as_slice() else {
        return Err("usage: soak_chart IN.csv OUT.svg [TITLE]".into());
    };
    let text = std::fs::read_to_string(csv)?;
    let mut samples = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let [t, _phase, rss_kib, files, lines, ..] = f.as_slice() else {
            return Err(format!("a short line in {csv}: {line}").into());
        };
        samples.push(SoakSample {
            t: t.parse()?,
            rss_mb: rss_kib.parse::<f64>()? / 1024.0,
            open_files: files.parse()?,
            log_lines_per_s: lines.parse()?,
        });
    }
    let title = rest.first().map_or("sipedge soak", String::as_str);
    soak(&samples, title, std::path::Path::new(svg))?;
    Ok(())
}
