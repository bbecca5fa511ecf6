# Report stage: per dataset, tables + statistics + figures from every run; then one summary
# table in the paper's layout. `snakemake --report report.html` collects the report() outputs.
from bihmf.models.model import run_combinations
from bihmf.report.aggregate import split_order
from bihmf.run import CURVE_FILE, TEST_PREDICTIONS_FILE
from bihmf.report.paper import PUBLISHED_PATH


rule report:
    input:
        metrics=report_inputs(METRICS_FILE),
        curves=report_inputs(CURVE_FILE),
        predictions=report_inputs(TEST_PREDICTIONS_FILE),
        benchmarks=report_benchmarks,
        cache=MAIN_INDEX,
    output:
        table_md=f"{REPORT_DIR}/{{dataset}}_table.md",
        table_html=dataset_report("table.html", "table", "1. Results per dataset", "tables"),
        table_tex=f"{REPORT_DIR}/{{dataset}}_table.tex",
        table_csv=dataset_report("table.csv", "table_csv", "1. Results per dataset", "all splits (CSV)"),
        stats_csv=dataset_report("stats.csv", "stats", "1. Results per dataset", "Bi-HMF vs best baseline (CSV)"),
        runs_csv=dataset_report("runs.csv", "runs", "3. Provenance and cost", "runs (CSV)"),
        bars_png=dataset_report("metrics.png", "bars", "2. Figures", "test metrics"),
        bars_pdf=f"{REPORT_DIR}/{{dataset}}_metrics.pdf",
        heatmap_png=dataset_report("heatmap.png", "heatmap", "2. Figures", "gain over struct_only"),
        heatmap_pdf=f"{REPORT_DIR}/{{dataset}}_heatmap.pdf",
        curves_png=dataset_report("curves.png", "curves", "2. Figures", "learning curves"),
        curves_pdf=f"{REPORT_DIR}/{{dataset}}_curves.pdf",
        cost_png=dataset_report("cost.png", "cost", "3. Provenance and cost", "cost vs accuracy"),
        cost_pdf=f"{REPORT_DIR}/{{dataset}}_cost.pdf",
    params:
        task=lambda wc: config["datasets"][wc.dataset]["task"],
        expected=lambda wc: expected_runs(wc.dataset),
        splits=lambda wc: split_order(config["datasets"][wc.dataset]),
        settings=config["report"],
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["report"],
    script:
        "../workflow_scripts/report.py"


rule report_summary:
    input:
        tables=expand(f"{REPORT_DIR}/{{dataset}}_table.csv", dataset=DATASETS),
        published=PUBLISHED_PATH,
    output:
        summary_md=f"{REPORT_DIR}/summary.md",
        summary_html=report(
            f"{REPORT_DIR}/summary.html",
            caption="../captions/summary.rst",
            category="0. Summary",
            labels={"content": "all benchmarks vs published"},
        ),
        summary_tex=f"{REPORT_DIR}/summary.tex",
        summary_front=SUMMARY_FRONT,  # included by captions/workflow.rst
        summary_csv=report(
            f"{REPORT_DIR}/summary.csv",
            caption="../captions/summary_csv.rst",
            category="0. Summary",
            labels={"content": "all benchmarks vs published (CSV)"},
        ),
    params:
        datasets=DATASETS,
        paper_benchmarks={d: config["datasets"][d]["paper_benchmark"] for d in DATASETS},
        rows=run_combinations(config["model"]["encoders"], config["model"]["fusions"]),
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["report_summary"],
    script:
        "../workflow_scripts/report_summary.py"


# One ablation (config `ablations`): its variants' runs beside the default (main) runs they change.
# ablation_run_files (rules/common.smk) lists both; outputs form section "4. Ablations".
rule ablation_report:
    input:
        metrics=ablation_run_files("{ablation}", METRICS_FILE),
        predictions=ablation_run_files("{ablation}", TEST_PREDICTIONS_FILE),
    output:
        md=f"{REPORT_DIR}/ablations/{{ablation}}.md",
        html=ablation_report_file("html", "ablation", "tables"),
        csv=ablation_report_file("csv", "ablation_csv", "all splits and tests (CSV)"),
        png=ablation_report_file("png", "ablation_plot", "headline metric per variant"),
    wildcard_constraints:
        ablation="[a-z0-9_]+",
    params:
        # what the report compares is read from the config in the script (bihmf.benchmark); the
        # entry here makes an edit of this ablation rerun its report
        ablation=lambda wc: next(entry for entry in config["ablations"] if entry["name"] == wc.ablation),
        settings=config["report"],
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["ablation_report"],
    script:
        "../workflow_scripts/ablation_report.py"
