rule report:
    input:
        lambda wc: run_metrics(wc.dataset),
    output:
        table="results/report/{dataset}_table.md",
        csv="results/report/{dataset}_table.csv",
        plot="results/report/{dataset}_metrics.png",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/report/{dataset}.log",
    script:
        "../workflow_scripts/report.py"
