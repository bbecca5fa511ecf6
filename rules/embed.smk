rule embed:
    input:
        proteins=PROTEINS,
        checkpoint=rules.esm_checkpoint.output.model,
        regression=rules.esm_checkpoint.output.regression,
        sha256=rules.esm_checkpoint.output.sha256,
    output:
        f"{ESM_CACHE}/{SHARD_FILE}",
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["embed"],
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
        proteins=PROTEINS,
        shards=esm_shards,
    output:
        ESM_INDEX,
    localrule: True
    conda:
        "../envs/bihmf.yaml"
    log:
        LOGS["embed_index"],
    script:
        "../workflow_scripts/embed_index.py"


# the cache of an `esm.precomputed` model: the source's rows imported instead of running ESM-2
# (bihmf.embeddings_import); same shards, so embed_index and training are unchanged
ruleorder: embed_import > embed


rule embed_import:
    input:
        proteins="results/data/{dataset}/proteins.parquet",
        source=lambda wc: ESM_MODELS[wc.esm]["precomputed"]["path"],
    output:
        f"{ESM_CACHE}/shard-{{shard}}-of-{{shards}}.parquet",
    wildcard_constraints:
        shard=r"\d+",
        shards=r"\d+",
        esm="|".join(re.escape(name) for name, esm in ESM_MODELS.items() if "precomputed" in esm) or "(?!)",
    conda:
        "../envs/bihmf.yaml"
    log:
        "logs/embed/{dataset}/{esm}/shard-{shard}-of-{shards}.log",
    params:
        layers=lambda wc: ESM_LAYERS[(wc.dataset, wc.esm)],
        esm=lambda wc: ESM_MODELS[wc.esm],
    script:
        "../workflow_scripts/embed_import.py"
