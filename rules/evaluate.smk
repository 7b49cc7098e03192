rule fit_judges:
    input:
        [asset_marker(name) for name in needed_assets()],
    output:
        f"{RESULTS}/judges/refusal_judge.json",
        f"{RESULTS}/judges/compliance_judge.json",
        f"{RESULTS}/judges/similarity_judge.json",
        f"{RESULTS}/judges/served_judge.json",
    log:
        f"{RESULTS}/logs/judges.log",
    benchmark:
        f"{RESULTS}/benchmarks/judges.tsv"
    conda:
        RESM_ENV
    threads: res("default", "threads", 1)
    resources:
        mem_mb=3000,
        runtime=30,
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        cache=lambda wc, input: os.path.dirname(os.path.dirname(input[0])),
        code=code("judges"),
    shell:
        "resm -q judge fit --cache {params.cache:q} --out {params.out:q} > {log:q} 2>&1"


localrules:
    download_judge_model,
    fetch_lm_eval_task,


rule fetch_lm_eval_task:
    input:
        lambda wc: lm_eval_task_files(wc.name),
    output:
        f"{RESULTS}/hub/lm_eval/{{name}}.json",
    log:
        f"{RESULTS}/logs/hub/lm_eval/{{name}}.log",
    wildcard_constraints:
        name=one_of(HARNESS),
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    params:
        args=lambda wc: lm_eval_fetch_args(wc.name),
        env=lm_eval_env(offline=False),
    shell:
        "{params.env} resm -q lm-eval fetch {params.args} --out {output:q} > {log:q} 2>&1"


rule download_judge_model:
    output:
        directory(f"{RESULTS}/hub/{{name}}"),
    log:
        f"{RESULTS}/logs/hub/{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/hub/{{name}}.tsv"
    wildcard_constraints:
        name=one_of(EVAL.get("models", {})),
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        repo=lambda wc: EVAL["models"][wc.name],
        code=code("base"),
    shell:
        "resm -q base download {params.repo:q} --out {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        models=eval_models(),
        model=lambda wc: model_dir(wc.arm),
        judges=f"{RESULTS}/judges/refusal_judge.json",
        data=[f"{RESULTS}/data/{d}/test.jsonl" for d in DIMS],
        lm_eval=lm_eval_fetched(),
    output:
        f"{RESULTS}/eval/{{arm}}/summary.json",
    log:
        f"{RESULTS}/logs/eval/{{arm}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/eval/{{arm}}.tsv"
    conda:
        EVAL_ENV
    threads: res("evaluate", "threads", 1)
    resources:
        mem_mb=mem("evaluate", 4000),
        runtime=res("evaluate", "runtime", 60),
        gpu=res("evaluate", "gpu", 0),
        gpu_model=gpu_model("evaluate"),
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        args=eval_args(),
        data=lambda wc, input: os.path.dirname(os.path.dirname(input.data[0])),
        judges=lambda wc, input: os.path.dirname(input.judges),
        cache=CACHE,
        code=code("evaluate"),
        env=lm_eval_env(offline=True),
    shell:
        "{params.env} resm -q evaluate --model {input.model:q} --arm {wildcards.arm:q} --data {params.data:q} "
        "--judges {params.judges:q} {params.args} --cache {params.cache:q} --out {params.out:q} --force > {log:q} 2>&1"
