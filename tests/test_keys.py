from glassvi import _keys


def test_keys_spell_the_documented_names():
    assert _keys.latent("linearvi") == "X_linearvi"
    assert _keys.latent_name("X_umap") == "umap"
    assert _keys.weights("programvi", _keys.PROGRAMVI_WEIGHTS) == "programvi_weights"
    assert _keys.weights("linearvi", _keys.LINEARVI_WEIGHTS) == "linearvi_loadings"
    key = _keys.attribution("linearvi", "saliency", "labels")
    assert key == "linearvi_saliency_labels"
    assert _keys.absolute(key) == "linearvi_saliency_labels_abs"
    assert _keys.is_absolute(_keys.absolute(key)) and not _keys.is_absolute(key)
    assert _keys.signed(_keys.absolute(key)) == key == _keys.signed(key)
    assert _keys.by_group(key, "cell_type") == "linearvi_saliency_labels_by_cell_type"
    assert _keys.differential("programvi") == "programvi_differential"
    assert _keys.has_prefix(key, "linearvi") and not _keys.has_prefix(key, "linear")
    assert _keys.group_columns(["a", "b"], ["x"]) == ["a|x", "b|x"]
    assert _keys.DEFAULT_WEIGHTS == ("programvi_weights", "linearvi_loadings")
    assert _keys.DEFAULT_LATENTS == ("X_programvi", "X_linearvi")
