"""`bench report`: scored runs -> tidy frames -> aggregation -> markdown leaderboard, figures, HTML.

One job a module, each importing only the ones before it (no module imports back up into the
package):

    load         run directories and score tables into tidy pandas frames
    aggregate    the protocols' seed/image aggregation; what makes a run not comparable
    figures      the scatter plot and the sample grid
    leaderboard  the markdown leaderboard ``<out>/leaderboard-<suite>.md`` with its csvs
    html         the static HTML report ``<out>/html/index.html`` (``--html``)
    cli          the command line and ``write_reports``

DataFrame API, for notebooks::

    from bench.report import load_scores, load_runs, summarize
    df = load_scores(["runs/ezigen", "runs/sd"])       # long format + run, suite, method
    summarize(df)                                       # run, metric -> mean, std, n, images
    summarize(df, by="category")                        # live / object breakdown
    summarize(df, by="subject")
    intervals(df, versus="sd")                          # + bootstrap intervals, paired comparison with run "sd"
                                                        # (docs/statistics.md)
"""

from __future__ import annotations

from bench.report.aggregate import aggregation_text, intervals, run_warnings, suite_aggregate, summarize
from bench.report.cli import configure, run, write_reports
from bench.report.figures import place_labels, sample_grid, scatter_plot, suite_scatter_axes
from bench.report.html import write_html
from bench.report.leaderboard import (RANDOM_STAMP, column_plan, format_value, leaderboard_table, print_warnings,
                                      seeds_text, suite_columns, write_leaderboard)
from bench.report.load import (DASH, PAPER_DIR, base_model, load_runs, load_scores, method_label,
                               read_paper_rows, run_cells, weights_status)

__all__ = ["DASH", "PAPER_DIR", "RANDOM_STAMP", "aggregation_text", "intervals", "base_model", "column_plan", "configure",
           "format_value", "leaderboard_table", "load_runs", "load_scores", "method_label", "place_labels",
           "print_warnings", "read_paper_rows", "run", "run_cells", "run_warnings", "sample_grid",
           "scatter_plot", "seeds_text", "suite_aggregate", "suite_columns", "suite_scatter_axes", "summarize",
           "weights_status", "write_html", "write_leaderboard", "write_reports"]
