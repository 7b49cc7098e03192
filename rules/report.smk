rule report:
    input:
        summaries=[f"{RESULTS}/eval/{arm}/summary.json" for arm in ARMS],
        conflicts=[f"{RESULTS}/conflicts/{combo}" for combo in config["combos"]],
        decontamination=[
            f"{RESULTS}/data/clean/{d}/decontamination.json" for d in TRAINED_DATA_DIMS
        ],
    output:
        grid=report(
            f"{RESULTS}/report/grid.csv",
            caption="../captions/grid.rst",
            category="Grid",
        ),
        merge_vs_mix=report(
            f"{RESULTS}/report/merge_vs_mix.csv",
            caption="../captions/merge_vs_mix.rst",
            category="Grid",
        ),
        selection=report(
            f"{RESULTS}/report/selection.csv",
            caption="../captions/selection.rst",
            category="Grid",
        ),
        comparisons=report(
            f"{RESULTS}/report/comparisons.csv",
            caption="../captions/comparisons.rst",
            category="Grid",
        ),
        forest=report(
            f"{RESULTS}/report/forest.png",
            caption="../captions/forest.rst",
            category="Plots",
        ),
        decontaminated=report(
            f"{RESULTS}/report/decontamination.csv",
            caption="../captions/decontamination.rst",
            category="Grid",
        ),
        ranking=report(
            f"{RESULTS}/report/ranking.csv",
            caption="../captions/ranking.rst",
            category="Grid",
        ),
        profile=report(
            f"{RESULTS}/report/profile.png",
            caption="../captions/profile.rst",
            category="Plots",
        ),
        pareto=report(
            f"{RESULTS}/report/pareto.png",
            caption="../captions/pareto.rst",
            category="Plots",
        ),
        conflicts=report(
            f"{RESULTS}/report/conflicts.png",
            caption="../captions/conflicts.rst",
            category="Plots",
        ),
        ranks=report(
            f"{RESULTS}/report/resm_ranks.png",
            caption="../captions/resm_ranks.rst",
            category="Plots",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        arms=ARMS,  # the effective config's, whatever config files and overrides made it
        results=lambda wc, input: os.path.dirname(
            os.path.dirname(os.path.dirname(input.summaries[0]))
        ),
        report=lambda wc, output: os.path.dirname(output.grid),
        margin=config.get("report", {}).get("equivalence_margin", 0.05),
        min_effect=config.get("report", {}).get("min_effect", 0.05),
        code=code("report"),
    shell:
        "resm -q report --arms {params.arms:q} --results {params.results:q} "
        "--equivalence-margin {params.margin:q} --min-effect {params.min_effect:q} "
        "--out {params.report:q} > {log:q} 2>&1"


# The trade-off frontier (`frontier:`): every point, each family's front, and which front is ahead.
rule frontier_report:
    input:
        summaries=[f"{RESULTS}/eval/{arm}/summary.json" for arm in FRONT_ARMS],
    output:
        points=report(
            f"{RESULTS}/fronts/points.csv",
            caption="../captions/frontier_points.rst",
            category="Frontier",
        ),
        hypervolume=report(
            f"{RESULTS}/fronts/hypervolume.csv",
            caption="../captions/frontier_hypervolume.rst",
            category="Frontier",
        ),
        plots=[
            report(
                f"{RESULTS}/fronts/{combo}.png",
                caption="../captions/frontier_plot.rst",
                category="Frontier",
            )
            for combo in FRONT_COMBOS
        ],
    log:
        f"{RESULTS}/logs/frontier_report.log",
    conda:
        RESM_ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        arms=FRONT_ARMS,
        results=lambda wc, input: os.path.dirname(
            os.path.dirname(os.path.dirname(input.summaries[0]))
        ),
        out=lambda wc, output: os.path.dirname(output.points),
        reference=FRONTIER.get("reference", "base"),
        margin=FRONTIER.get("margin", 0.01),
        code=code("fronts"),
    shell:
        "resm -q frontier report --results {params.results:q} --arms {params.arms:q} "
        "--reference {params.reference:q} --margin {params.margin:q} --out {params.out:q} > {log:q} 2>&1"
