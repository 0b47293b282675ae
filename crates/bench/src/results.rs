//! Where a bench leaves its results: `OUT/NAME.md` (the table it printed) and `OUT/NAME.svg`
//! (its chart), the pair `warren bench report` gathers.

use std::path::Path;

use anyhow::Context;

use crate::chart::BarChart;

/// Prints `markdown` on stdout (the bench's spinner cleared first), writes it and `chart` as
/// `out/name.md` and `out/name.svg`, and says so on stderr.
pub fn write(out: &Path, name: &str, markdown: &str, chart: &BarChart) -> anyhow::Result<()> {
    crate::progress::bench_done();
    print!("{markdown}");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (md, svg) = (out.join(format!("{name}.md")), out.join(format!("{name}.svg")));
    std::fs::write(&md, markdown).with_context(|| format!("cannot write {}", md.display()))?;
    std::fs::write(&svg, chart.svg()).with_context(|| format!("cannot write {}", svg.display()))?;
    eprintln!("bench: wrote {} and {}", md.display(), svg.display());
    Ok(())
}
