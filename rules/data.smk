rule build_data:
    input:
        assets=[asset_marker(name) for name in needed_assets()],
        base=base_dir(),
    output:
        train=f"{RESULTS}/data/{{dim}}/train.jsonl",
        val=f"{RESULTS}/data/{{dim}}/val.jsonl",
        test=f"{RESULTS}/data/{{dim}}/test.jsonl",
    log:
        f"{RESULTS}/logs/data/{{dim}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/data/{{dim}}.tsv"
    conda:
        "../envs/resm.yaml"
    threads: res("default", "threads", 1)
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        out=f"{RESULTS}/data/{{dim}}",
        sources=lambda wc: source_args(wc.dim),
        caps=" ".join(
            f"--{k.replace('_', '-')} {DATA[k]}"
            for k in (
                "max_train",
                "max_val",
                "val",
                "test",
                "max_new_tokens",
                "near_duplicate_cosine",
            )
            if k in DATA
        ),
        answers="" if DATA.get("base_answers", False) else "--no-base-answers",
        cache=lambda wc, input: os.path.dirname(os.path.dirname(input.assets[0])),
        code=code("data"),
    shell:
        "resm -q data build --dim {wildcards.dim} {params.sources} {params.caps} {params.answers} "
        "--base {input.base} --cache {params.cache} --out {params.out} --force > {log} 2>&1"


rule mix_data:
    input:
        data=lambda wc: [
            f"{RESULTS}/data/{d}/train.jsonl" for d in combo_dims(wc.combo)
        ],
        judge=mix_judge()[1],
    output:
        f"{RESULTS}/data/mix/{{strategy}}/{{combo}}/train.jsonl",
    log:
        f"{RESULTS}/logs/mix/{{strategy}}/{{combo}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/mix/{{strategy}}/{{combo}}.tsv"
    conda:
        "../envs/resm.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        out=f"{RESULTS}/data/mix/{{strategy}}/{{combo}}",
        inputs=lambda wc: " ".join(
            f"{d}={RESULTS}/data/{d}" for d in combo_dims(wc.combo)
        ),
        options=lambda wc: " ".join(
            [mix_judge()[0]]
            + (
                [
                    "--ratios "
                    + ",".join(f"{d}={MIX['ratios'][d]}" for d in combo_dims(wc.combo))
                ]
                if wc.strategy == "ratio"
                else []
            )
            + [f"--{k} {MIX[k]}" for k in ("temperature", "margin") if k in MIX]
        ),
        seed=TRAIN.get("seed", 0),
        code=code("mix"),
    shell:
        "resm -q data mix --strategy {wildcards.strategy} --inputs {params.inputs} {params.options} "
        "--seed {params.seed} --out {params.out} --force > {log} 2>&1"
