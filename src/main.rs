//! The `orgsettle` binary: parse, run, map the outcome to an exit code.

use clap::Parser;
use orgsettle::cli::{Cli, Command, Format};
use orgsettle::job::{self, Failure, Options};
use std::process::ExitCode;

/// mimalloc for small blocks and glibc for blocks of 64 KiB or more
/// (`memory::SplitAllocator`), both keeping freed pages for reuse until the job
/// releases them (`memory`): the day's batches and output blocks are allocated
/// and freed thousands of times, and glibc's allocator alone handed most of them
/// back to the kernel, which then had to zero fresh pages; mimalloc alone kept
/// the large ones in ranges of its arena that smaller blocks never reused
/// (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: orgsettle::memory::SplitAllocator = orgsettle::memory::SplitAllocator;

/// Transparent huge pages off for this process. mimalloc asks for them
/// (`madvise(MADV_HUGEPAGE)`), and on a VM whose host backs guest memory on first
/// touch, zeroing a fresh 2 MiB page per fault was a third of the CPU time of a
/// 1M-row day (`clear_page_erms`); with 4 KiB pages the system time fell from
/// 2.1–4.6 s to 0.9 s and the peak resident set by 150 MB (BENCHMARKS.md). The
/// flag covers mappings made before it as well (checked at fault time).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    orgsettle::memory::configure_allocator();
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    // A broken invariant asserted deep in the engine panics before anything is
    // written; it is an internal error (exit 1), never a crash code.
    std::panic::set_hook(Box::new(|info| eprintln!("orgsettle: invariant violated: {info}")));
    let outcome = std::panic::catch_unwind(|| run(cli))
        .unwrap_or_else(|_| Err(Failure::Internal("a broken invariant stopped the run; nothing was written".into())));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("orgsettle: {failure}");
            ExitCode::from(failure.exit_code() as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if job::timings_on() {
        eprintln!("timing: the allocator's purge delay: {} ms", orgsettle::memory::purge_delay());
    }
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| Failure::Internal(format!("cannot start {threads} threads: {e}")))?;
    }
    let opts = Options { quiet: cli.quiet, parquet: cli.format.contains(&Format::Parquet), exits_after: true, ..Options::default() };
    match cli.command {
        Command::Daily { input, out, date } => job::daily(&input, &out, date, opts),
        Command::Close { input, out, month } => job::close(&input, &out, month, opts),
        Command::Run { input, out, from, to } => job::run(&input, &out, from, to, opts),
        Command::Gen { out, orgs, accounts, days, usage_per_day, seed, start } => {
            let options = orgsettle::gen::GenOptions { orgs, accounts: accounts.unwrap_or(orgs * 10), days, usage_per_day, seed, start };
            let summary = orgsettle::gen::generate(&out, &options)
                .map_err(|e| Failure::Internal(format!("cannot write {}: {e}", out.display())))?;
            if !opts.quiet {
                eprintln!(
                    "generated {} orgs, {} accounts, {} usage rows over {days} day(s) into {}",
                    summary.orgs, summary.accounts, summary.usage_rows, out.display()
                );
            }
            Ok(())
        }
        Command::Validate { input } => {
            let report = job::validate(&input)?;
            for line in &report {
                println!("{line}");
            }
            println!("input is usable; {} row(s) would be rejected", report.len());
            Ok(())
        }
    }
}
