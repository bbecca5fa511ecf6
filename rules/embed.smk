rule embed:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        checkpoint=rules.esm_checkpoint.output.model,
        regression=rules.esm_checkpoint.output.regression,
        sha256=rules.esm_checkpoint.output.sha256,
    output:
        f"{ESM_CACHE}/shard-{{shard}}-of-{{shards}}.parquet",
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/embed/{dataset}/{esm}/shard-{shard}-of-{shards}.log",
    params:
        layers=lambda wc: ESM_LAYERS[(wc.dataset, wc.esm)],
        esm=lambda wc: ESM_MODELS[wc.esm],
    threads: 2
    resources:
        gpu=1,
    script:
        "../workflow_scripts/embed.py"


rule embed_index:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        shards=esm_shards,
    output:
        f"{ESM_CACHE}/{INDEX_NAME}",
    localrule: True
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/embed/{dataset}/{esm}/index.log",
    script:
        "../workflow_scripts/embed_index.py"
