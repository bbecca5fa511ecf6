rule embed:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        checkpoint=rules.esm_checkpoint.output.model,
        regression=rules.esm_checkpoint.output.regression,
        sha256=rules.esm_checkpoint.output.sha256,
    output:
        f"{ESM_CACHE}/shard-{{shard}}-of-{ESM_SHARDS}.parquet",
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../envs/bihmf.yaml"
    log:
        f"logs/embed/{{dataset}}/{ESM_NAME}/shard-{{shard}}-of-{ESM_SHARDS}.log",
    params:
        layers=ESM_LAYERS,
        esm=config["esm"],
    threads: 2
    resources:
        gpu=1,
    script:
        "../workflow_scripts/embed.py"


rule embed_index:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        shards=expand(f"{ESM_CACHE}/shard-{{shard}}-of-{ESM_SHARDS}.parquet", shard=range(ESM_SHARDS), allow_missing=True),
    output:
        ESM_INDEX,
    localrule: True
    conda:
        "../envs/bihmf.yaml"
    log:
        f"logs/embed/{{dataset}}/{ESM_NAME}/index.log",
    script:
        "../workflow_scripts/embed_index.py"
