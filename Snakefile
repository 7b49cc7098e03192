# resm-3h: mix the data or merge the models? The whole grid, from assets to report.
# Rules only wire: each calls the `resm` CLI; resm_core does the work.

# The config comes from the profile (profiles/default: config.yaml) or --configfile: Snakemake deep-merges
# every config file it is given, so a `configfile:` here would leak default keys into other configs.
# Cached rules (base, training) have no `benchmark:` (Snakemake forbids it with `cache: True`);
# their resm_manifest.json records wall time and peak memory instead.


include: "rules/common.smk"


# An image with resm-3h inside (containers/): `container:` in the config, then --sdm apptainer.
if config.get("container"):

    container: config["container"]


# The report's first page: the verdict, power and caveats the report rule wrote (before any run: the workflow).
report: report_description()


include: "rules/assets.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/adopt.smk"
include: "rules/taskvec.smk"
include: "rules/merge.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        f"{RESULTS}/report/grid.csv",
        [f"{RESULTS}/eval/{arm}/summary.json" for arm in ARMS],
        [f"{RESULTS}/fronts/hypervolume.csv"] if FRONT_POINTS else [],
