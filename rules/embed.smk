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
