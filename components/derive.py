"""Stage `derive`: a search run's alphas -> the discrete `Genotype` (paper sect. 2.4) with its lineage, and
Graphviz pictures of its cells (`CellPictures`: normal and reduction, or recurrent; PNG and PDF).

The genotype is derived again from the stored alphas with `darts_tf.genotypes.derive_genotype` and must
agree with the one the search published: a mismatch means the search artifact is inconsistent.
"""

from __future__ import annotations

import os
from typing import Tuple

from . import artifacts, common
from .monitoring import log_stage

STAGE = "derive"
# Spec
SEARCH_RUN_KEY = "search_run"  # input: SearchRun
GENOTYPE_KEY = "genotype"  # output: Genotype
PICTURES_KEY = "pictures"  # output: CellPictures
INPUTS = {SEARCH_RUN_KEY: artifacts.SEARCH_RUN}
OUTPUTS = {GENOTYPE_KEY: artifacts.GENOTYPE, PICTURES_KEY: artifacts.CELL_PICTURES}
PARAMETERS: dict = {}


def derive_from_search(search: artifacts.SearchRunArtifact):
    """The genotype the search run's final alphas encode (top-2 edges per node for CNN, top-1 for RNN)."""
    from darts_tf import genotypes as gt
    from darts_tf.guards import NonFiniteError, check_finite

    alphas = search.alphas()
    try:
        check_finite(alphas, "its alphas", "The search diverged: no genotype is derived from them.")
    except NonFiniteError as e:
        raise artifacts.ArtifactError(STAGE, search.path, str(e)) from e
    task = common.task_of(search.kind, STAGE)
    expected, optional = task.alpha_names, task.optional_alpha_names
    extra = set(alphas) & set(optional)  # all of them or none (a PC-DARTS search's edge-normalisation betas)
    if sorted(set(alphas) - extra) != sorted(expected) or extra not in (set(), set(optional)):
        also = f" (and {', '.join(optional)} all together, or none of them)" if optional else ""
        raise artifacts.ArtifactError(STAGE, search.path, f"holds the alphas {', '.join(sorted(alphas)) or '(none)'}; "
                                                          f"a {search.kind} search saves {', '.join(expected)}{also}")
    # the search's own cap of skip_connects (a collapse guard, darts_tf.collapse), so its genotype is re-derived
    cap = (search.lineage.get("flags") or {}).get("max_skip_connects") or None
    return gt.derive_from_alphas(alphas, primitives=search.primitives, max_skip_connects=cap)


def run(search_run: str, genotype: str, pictures: str
        ) -> Tuple[artifacts.GenotypeArtifact, artifacts.CellPicturesArtifact]:
    from darts_tf import genotypes as gt

    search = artifacts.read_search_run(search_run, STAGE)
    derived = derive_from_search(search)
    published = gt.load_genotype_file(search.genotype_path, kind=search.kind)
    if derived != published:
        raise artifacts.ArtifactError(STAGE, search_run, f"genotype.json ({published}) is not what its alphas "
                                                         f"encode ({derived})")
    lineage = {**search.lineage, "stage": STAGE, "search_uri": os.path.abspath(search_run)}
    genotype_artifact = artifacts.write_genotype(genotype, derived, lineage, STAGE)
    pictures_artifact = artifacts.write_cell_pictures(pictures, derived, STAGE)
    log_stage(artifacts.sibling_log_dir(pictures, STAGE),
              text={"genotype": gt.genotype_to_json(derived),
                    "lineage": f"search {lineage['search_uri']}, seed {lineage['seed']}, "
                               f"dataset {lineage.get('dataset')} ({lineage['dataset_hash'][:16]})"},
              png_files=pictures_artifact.paths("png"))
    return genotype_artifact, pictures_artifact
