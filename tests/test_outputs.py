"""Outputs and presets: what the settings make of OUTPUTS, [outputs.NAME] and [folders."NAME"]."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest

from watcher import config
from watcher.errors import ConfigError
from watcher.outputs import PRESETS, output_rel

REPO = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, toml: str = "", **env: str) -> config.Settings:
    path = tmp_path / "t.toml"
    path.write_text(toml)
    variables = {"THUMBGEN_BASE_PATH": str(tmp_path), "THUMBGEN_WORKER_ID": "w"}
    variables.update({f"THUMBGEN_{k}": v for k, v in env.items()})
    return config.load(path, env=variables)


def refused(tmp_path: Path, toml: str = "", **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, toml, **env)
    return caught.value


def test_the_default_is_one_output_like_before(tmp_path: Path) -> None:
    s = load(tmp_path, "output_size = '1000x800'\nfill_ratio = 0.7\noutput_format = 'png'\n")
    (spec,) = s.plan.outputs
    assert (spec.name, spec.size, spec.format, spec.fill, spec.background) == (
        "default", (1000, 800), "png", 0.7, "folder")
    assert output_rel(PurePosixPath("loja/a.b.JPG"), spec, several=False) == PurePosixPath(
        "loja/a.b.png")


def test_presets_hold_what_the_marketplaces_ask(tmp_path: Path) -> None:
    specs = {s.name: s for s in load(tmp_path, OUTPUTS="amazon,mercadolivre,cutout").plan.outputs}
    amazon, ml, cut = specs["amazon"], specs["mercadolivre"], specs["cutout"]
    assert (amazon.size, amazon.format, amazon.quality, amazon.background, amazon.fill) == (
        (2000, 2000), "jpeg", 90, "white", 0.88)
    assert amazon.pure_white and amazon.fill >= 0.85 and min(amazon.size) >= 1000
    assert (ml.size, ml.format, ml.quality, ml.background, ml.fill, ml.max_bytes) == (
        (1200, 1200), "jpeg", 90, "white", 0.95, 10 * 1024**2)
    assert (cut.size, cut.format, cut.background, cut.fill) == (None, "png", "transparent", None)
    assert set(PRESETS) == {"default", "amazon", "mercadolivre", "cutout"}


def test_several_outputs_go_under_their_names(tmp_path: Path) -> None:
    s = load(tmp_path, OUTPUTS="amazon,cutout")
    rels = [output_rel(PurePosixPath("loja/x.jpg"), spec, several=True)
            for spec in s.plan.outputs]
    assert rels == [PurePosixPath("amazon/loja/x.jpg"), PurePosixPath("cutout/loja/x.png")]


SHOPS_OWN = """
[thumbnail]
outputs = ["default"]

[folders."loja-a"]
outputs = ["amazon", "mercadolivre"]
"""


def _paths(plan, rel: str) -> set[PurePosixPath]:  # type: ignore[no-untyped-def]
    return {output_rel(PurePosixPath(rel), spec, plan.by_name) for spec in plan.for_rel(
        PurePosixPath(rel))}


def test_a_shop_folder_named_like_an_output_never_lands_on_that_outputs_files(
        tmp_path: Path) -> None:
    """Seen in a new-user trial: with loja-a making amazon and mercadolivre, a photo dropped
    into a shop folder called amazon/ overwrote loja-a's Amazon picture."""
    plan = load(tmp_path, SHOPS_OWN).plan
    shop = _paths(plan, "loja-a/mugs.jpg")
    named_like_amazon = _paths(plan, "amazon/loja-a/mugs.jpg")
    top = _paths(plan, "mugs.jpg")
    assert shop == {PurePosixPath("amazon/loja-a/mugs.jpg"),
                    PurePosixPath("mercadolivre/loja-a/mugs.jpg")}
    assert named_like_amazon == {PurePosixPath("default/amazon/loja-a/mugs.jpg")}
    assert top == {PurePosixPath("default/mugs.jpg")}  # one layout for the whole configuration
    assert not shop & named_like_amazon


def test_one_output_everywhere_keeps_the_plain_layout(tmp_path: Path) -> None:
    plan = load(tmp_path, '[folders."loja-a"]\nbackground = "white"\n').plan
    assert not plan.by_name
    assert _paths(plan, "amazon/x.jpg") == {PurePosixPath("amazon/x.jpg")}


CUSTOM = """
[thumbnail]
outputs = ["site", "mercadolivre"]

[outputs.site]
preset = "default"
size = [1000, 800]
format = "webp"
quality = 80
fill = 0.7
background = "#F4F1EA"
shadow = "contact"

[folders."loja-a"]
outputs = ["amazon", "site"]
background = "white"
fill = 0.6

[folders."loja-b"]
fill = 0.9
"""


def test_custom_outputs_and_shop_folders(tmp_path: Path) -> None:
    plan = load(tmp_path, CUSTOM).plan
    assert [s.name for s in plan.outputs] == ["site", "mercadolivre"]
    site = plan.outputs[0]
    assert (site.size, site.format, site.quality, site.fill, site.background, site.shadow) == (
        (1000, 800), "webp", 80, 0.7, "#f4f1ea", "contact")
    # top level and other folders: the global list
    assert plan.for_rel(PurePosixPath("x.jpg")) == plan.outputs
    assert plan.for_rel(PurePosixPath("outra/x.jpg")) == plan.outputs
    a = plan.for_rel(PurePosixPath("loja-a/sub/x.jpg"))
    assert [(s.name, s.background, s.fill) for s in a] == [
        ("amazon", "white", 0.88), ("site", "white", 0.6)]  # amazon keeps its own rules
    b = plan.for_rel(PurePosixPath("loja-b/x.jpg"))
    assert [(s.name, s.fill) for s in b] == [("site", 0.9), ("mercadolivre", 0.95)]
    # a file directly in the inbox named like a shop folder is not in it
    assert plan.for_rel(PurePosixPath("loja-a")) == plan.outputs


def test_thumbgen_config_shows_each_folders_effective_outputs(tmp_path: Path) -> None:
    lines = load(tmp_path, CUSTOM).plan.describe()
    assert 'folder "loja-a" → output amazon: 2000×2000 JPEG q90, background white, product ' \
           'fills 88% (preset amazon)' in lines
    assert any(line.startswith('folder "loja-a" → output site: 1000×800 WEBP q80, background '
                               'white, product fills 60%') for line in lines)


def test_the_environment_names_outputs(tmp_path: Path) -> None:
    assert [s.name for s in load(tmp_path, OUTPUTS="amazon, mercadolivre").plan.outputs] == [
        "amazon", "mercadolivre"]


@pytest.mark.parametrize(("toml", "env", "key", "words"), [
    ("", {"OUTPUTS": "amazon,ebay"}, "OUTPUTS", "unknown output 'ebay'"),
    ("", {"OUTPUTS": "amazon,amazon"}, "OUTPUTS", "listed twice"),
    ("[outputs.x]\nformat = 'jpeg'\nbackground = 'transparent'\n", {}, "outputs.x.background",
     "no transparency"),
    ("[outputs.x]\nfill = 0\n", {}, "outputs.x.fill", "(0, 1]"),
    ("[outputs.x]\nfill = 1.5\n", {}, "outputs.x.fill", "(0, 1]"),
    ("[outputs.x]\npreset = 'shopee'\n", {}, "outputs.x.preset", "unknown preset"),
    ("[outputs.x]\ncolour = 'red'\n", {}, "outputs.x.colour", "unknown key"),
    ("[outputs.x]\nformat = 'gif'\n", {}, "outputs.x.format", "jpeg, png, webp, avif"),
    ("[outputs.x]\npreset = 'amazon'\nshadow = 'contact'\n", {}, "outputs.x.shadow",
     "does not accept shadows"),
    ("[outputs.x]\npreset = 'mercadolivre'\nbackground = '#eeeeee'\n", {},
     "outputs.x.background", "exactly white"),
    ("[outputs.x]\nsize = 'big'\n", {}, "outputs.x.size", "1200x900"),
    ("[outputs.amazon]\nfill = 0.9\n", {}, "outputs.amazon", "preset's name"),
    ('[folders."loja"]\noutputs = ["nope"]\n', {}, "folders.loja.outputs", "unknown output"),
    ('[folders."loja"]\nfill = 2\n', {}, "folders.loja.fill", "(0, 1]"),
    ('[folders."loja"]\nbackground = "transparent"\n', {}, "folders.loja.background",
     "transparency"),
    ('[folders."_falhas"]\nfill = 0.5\n', {}, "folders._falhas", "one folder name"),
])
def test_bad_combinations_are_refused_naming_the_key(tmp_path: Path, toml: str,
                                                     env: dict[str, str], key: str,
                                                     words: str) -> None:
    error = refused(tmp_path, toml, **env)
    assert error.key == key and words in str(error), str(error)


@pytest.mark.parametrize(("toml", "env", "source"), [
    ("", {"OUTPUTS": "amazn"}, "(from env THUMBGEN_OUTPUTS)"),
    ("outputs = ['amazon', 'amazon']\n", {}, "(from file "),
])
def test_a_bad_output_list_says_where_it_was_set(tmp_path: Path, toml: str,
                                                 env: dict[str, str], source: str) -> None:
    # like every other key's error: the operator sees which of file and environment to fix
    assert source in str(refused(tmp_path, toml, **env))


def test_the_documented_example_in_the_shipped_config_loads(tmp_path: Path) -> None:
    """config/thumbgen.toml's commented outputs example, uncommented, is valid as written."""
    text = (REPO / "config" / "thumbgen.toml").read_text()
    start = text.index("# [thumbnail]")
    block = re.findall(r"^# ?(.*)$", text[start:text.index("# fill = 0.8") + 13], re.M)
    toml = [line for line in block if re.match(r"^(\[.+\]|[a-z_]+ = .+)$", line)]
    plan = load(tmp_path, "\n".join(toml)).plan
    assert [s.name for s in plan.outputs] == ["mercadolivre", "site"]
    assert [s.name for s in plan.for_rel(PurePosixPath("loja-a/x.jpg"))] == ["amazon",
                                                                             "default"]
