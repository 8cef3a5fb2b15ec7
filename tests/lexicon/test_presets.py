"""cemr.lexicon.presets: the preset data files, their checks and the presets on the real lists."""
import fnmatch
import os
from importlib import resources
from pathlib import Path

import pytest

from cemr.config import LexiconConfig, data_dir
from cemr.lexicon import PRESETS, PresetError, bmm_tags, build_lexicon, builder_from_config, lexicons_dir
from cemr.lexicon.presets import load_preset_file, load_presets

ROOT = Path(__file__).resolve().parents[2]

# The presets as the code held them before they became data files (copied once from
# cemr/lexicon.py at 03548ee): the files must keep them exactly.
_QA, _KY = "QASystemOnMedicalKG_dict/", "kyzhouhzau_CCKS_CRF_dic/"
_UNTYPED = [("THUOCL_medical.txt", "lines", None, {}), ("dict_medical_source_words.txt", "lines", None, {})]
_CCKS = {
    "types": ("身体部位", "症状和体征", "疾病和诊断", "检查和检验", "治疗"),
    "sources": [
        ("medical_ner_dict.csv", "csv", None, {
            "DIS": "疾病和诊断", "SYM": "症状和体征", "SGN": "症状和体征", "REG": "身体部位", "ORG": "身体部位",
            "TES": "检查和检验", "DRU": "治疗", "SUR": "治疗", "PRE": "治疗", "PRP": "治疗"}),
        (_QA + "disease.txt", "lines", "疾病和诊断", {}),
        (_QA + "symptom.txt", "lines", "症状和体征", {}),
        (_QA + "check.txt", "lines", "检查和检验", {}),
        (_QA + "drug.txt", "lines", "治疗", {}),
    ] + _UNTYPED,
    "noisy": [(_KY + "jiepou.txt", "lines", "身体部位", {}), (_KY + "zhenzhaung.txt", "lines", "症状和体征", {}),
              (_KY + "drugs.txt", "lines", "治疗", {}), (_KY + "shoushu.txt", "lines", "治疗", {})],
    "retype": (),
}
_IMAGING = (r"(?<![A-Za-z])(CT|MRI?|MRCP|MRA|PET|DSA|CR|DR|ECT|SPECT)(?![A-Za-z])|超声|B超|彩超|多普勒|造影|"
            r"X线|X光|平片|摄片|胸片|核磁|磁共振|显像|扫描|平扫|心电图")
_YIDU = {
    "types": ("解剖部位", "疾病和诊断", "影像检查", "实验室检验", "手术", "药物"),
    "sources": [
        ("medical_ner_dict.csv", "csv", None, {
            "DIS": "疾病和诊断", "REG": "解剖部位", "ORG": "解剖部位", "TES": "实验室检验", "DRU": "药物", "SUR": "手术"}),
        (_QA + "disease.txt", "lines", "疾病和诊断", {}),
        (_QA + "check.txt", "lines", "实验室检验", {}),
        (_QA + "drug.txt", "lines", "药物", {}),
    ] + _UNTYPED,
    "noisy": [(_KY + "jiepou.txt", "lines", "解剖部位", {}), (_KY + "drugs.txt", "lines", "药物", {}),
              (_KY + "shoushu.txt", "lines", "手术", {})],
    "retype": ((_IMAGING, "实验室检验", "影像检查"),),
}


def _expected(spec, noisy):
    return spec["types"], spec["sources"] + (spec["noisy"] if noisy else []), (_QA + "deny.txt",), spec["retype"]


EXPECTED = {
    "ccks2017": _expected(_CCKS, False), "ccks2017_all": _expected(_CCKS, True),
    "yidu": _expected(_YIDU, False), "yidu_all": _expected(_YIDU, True),
}


def test_preset_files_hold_the_presets_of_the_old_code():
    assert list(PRESETS) == list(EXPECTED)
    for name, preset in PRESETS.items():
        got = (preset.types, [(s.path, s.format, s.type, s.type_map) for s in preset.sources],
               preset.stopword_files, preset.retype)
        assert preset.name == name and got == EXPECTED[name], name


def test_preset_files_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    globs = pyproject["tool"]["setuptools"]["package-data"]["cemr"]
    files = [f.name for f in (resources.files("cemr.lexicon") / "presets").iterdir()]
    assert sorted(files) == ["ccks2017.yaml", "yidu.yaml"]
    for name in files:
        assert any(fnmatch.fnmatch(f"lexicon/presets/{name}", g) for g in globs), (name, globs)


GOOD = "types: [A, B]\nsources:\n  - {path: a.txt, type: A}\n"


def test_noisy_sources_make_the_all_preset(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD + "noisy_sources: [{path: n.csv, format: csv, type_map: {X: B}}]\n",
                                     encoding="utf-8")
    (tmp_path / "d.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "README.txt").write_text("not a preset", encoding="utf-8")
    presets = load_presets(tmp_path.iterdir())
    assert list(presets) == ["c", "c_all", "d"]
    assert [s.path for s in presets["c_all"].sources] == ["a.txt", "n.csv"]
    assert presets["c_all"].sources[1].type_map == {"X": "B"} and presets["c"].sources[0].format == "lines"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("types: [A\n", "invalid YAML"),
        ("- A\n", "top level: expected a mapping"),
        ("types: [A]\n", "missing key(s) sources"),
        (GOOD + "stopwords: [x]\n", "unknown key(s) stopwords"),
        ("types: [A, A]\nsources: []\n", "types: expected distinct types"),
        ("types: A\nsources: []\n", "types: expected a list"),
        ("types: [A]\nsources: [{type: A}]\n", "sources[0]: missing key(s) path"),
        ("types: [A]\nsources: [{path: a, format: tsv, type: A}]\n", "sources[0].format: expected lines or csv"),
        ("types: [A]\nsources: [{path: a, type: Z}]\n", "sources[0].type: type 'Z' is not one of the file's types"),
        ("types: [A]\nsources: [{path: a, type_map: {ON: A}}]\n", "sources[0].type_map: expected a non-empty string"),
        ("types: [A]\nsources: [{path: a, type_map: {X: Z}}]\n", "sources[0].type_map.X: type 'Z'"),
        ("types: [A]\nsources: [{path: a, type_map: [X]}]\n", "sources[0].type_map: expected a mapping"),
        ("types: [A]\nsources: []\nnoisy_sources: [{path: 3}]\n", "noisy_sources[0].path: expected a non-empty"),
        ("types: [A]\nsources: []\nstopword_files: [null]\n", "stopword_files[0]: expected a non-empty string"),
        ("types: [A, B]\nsources: []\nretype: [{pattern: '(', from: A, to: B}]\n", "retype[0].pattern: not a regular"),
        ("types: [A, B]\nsources: []\nretype: [{pattern: x, from: A}]\n", "retype[0]: missing key(s) to"),
        ("types: [A]\nsources: []\nretype: [{pattern: x, from: A, to: C}]\n", "retype[0].to: type 'C'"),
    ],
)
def test_malformed_preset_file_names_file_and_key(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PresetError) as err:
        load_preset_file(path)
    assert str(err.value).startswith(f"{path}: ") and problem in str(err.value)


def test_preset_names_must_be_unique_and_files_present(tmp_path):
    (tmp_path / "c.yaml").write_text(GOOD + "noisy_sources: []\n", encoding="utf-8")
    (tmp_path / "c_all.yaml").write_text(GOOD, encoding="utf-8")
    with pytest.raises(PresetError, match=r"c_all.yaml: preset 'c_all' is defined twice"):
        load_presets(tmp_path.iterdir())
    with pytest.raises(PresetError, match="no lexicon preset files"):
        load_presets([])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ccks2017", "yidu"])
def test_presets_load_the_shared_lexicons(name):
    preset = PRESETS[name]
    for src in preset.resolved_sources(lexicons_dir()):
        assert os.path.isfile(src.path), src.path
    lex = build_lexicon(LexiconConfig(preset=name))
    counts = lex.type_counts()
    assert set(counts) == set(preset.types)
    assert all(counts[t] > 0 for t in preset.types), counts
    assert len(lex) > 20000
    rep = lex.report
    skipped = {s.name for s in rep.sources if s.skipped}
    assert skipped == {f"{name}:THUOCL_medical.txt", f"{name}:dict_medical_source_words.txt"}
    for s in rep.sources:
        assert s.read == s.kept + s.duplicates + sum(s.rejected.values())
    assert {"没有", "不能"} <= builder_from_config(LexiconConfig(preset=name)).term_filter.stopwords  # deny.txt
    if name == "yidu":
        assert lex.get("腹部CT") == "影像检查" and lex.get("血常规") == "实验室检验"
    else:
        assert lex.get("头痛") == "症状和体征" and lex.get("胃癌") == "疾病和诊断"
        tags = bmm_tags("患者头痛，行胃癌根治术", lex)
        assert tags[2:4] == ["B-症状和体征", "I-症状和体征"]


@pytest.mark.slow
def test_all_presets_add_the_fragment_lists():
    small, full = build_lexicon(LexiconConfig(preset="yidu")), build_lexicon(LexiconConfig(preset="yidu_all"))
    assert len(full) > len(small)
    assert set(full.types()) == set(small.types())
    assert os.path.isdir(os.path.join(data_dir(), "lexicons"))
