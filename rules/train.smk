rule train_expert:
    input:
        base=base_dir(),
        data=f"{RESULTS}/data/clean/{{dim}}/train.jsonl",
    output:
        protected(directory(f"{RESULTS}/models/{{rep}}expert/{{dim}}")),
    log:
        f"{RESULTS}/logs/train/{{rep}}expert/{{dim}}.log",
    wildcard_constraints:
        dim=one_of(TRAINED_DIMS),  # an expert named in `experts:` is adopted, not trained
    cache: True
    conda:
        RESM_ENV
    threads: res("train", "threads", 1)
    resources:
        mem_mb=mem("train", 6000),
        runtime=res("train", "runtime", 120),
        disk_mb=res("train", "disk_mb", 2000),
        gpu=res("train", "gpu", 0),
        gpu_model=gpu_model("train"),
    params:
        args=lambda wc: train_args(TRAIN["steps"], wc.rep),
        data=lambda wc, input: os.path.dirname(input.data),
        code=code("train"),
    shell:
        "resm -q train --base {input.base:q} --data {params.data:q} {params.args} --out {output:q} > {log:q} 2>&1"


rule train_mixture:
    input:
        base=base_dir(),
        data=f"{RESULTS}/data/mix/{{strategy}}/{{combo}}/train.jsonl",
    output:
        protected(directory(f"{RESULTS}/models/{{rep}}mix/{{strategy}}/{{combo}}")),
    log:
        f"{RESULTS}/logs/train/{{rep}}mix/{{strategy}}/{{combo}}.log",
    cache: True
    conda:
        RESM_ENV
    threads: res("train", "threads", 1)
    resources:
        mem_mb=mem("train", 6000),
        runtime=lambda wc: res("train", "runtime", 120) * len(combo_dims(wc.combo)),
        disk_mb=res("train", "disk_mb", 2000),
        gpu=res("train", "gpu", 0),
        gpu_model=gpu_model("train"),
    params:
        args=lambda wc: train_args(TRAIN["steps"] * len(combo_dims(wc.combo)), wc.rep),
        data=lambda wc, input: os.path.dirname(input.data),
        code=code("train"),
    shell:
        "resm -q train --base {input.base:q} --data {params.data:q} {params.args} --out {output:q} > {log:q} 2>&1"
