"""The stock inference APIs on our configs and products (issue 19, point 3).

mmpretrain's ``ImageClassificationInferencer`` / ``get_model`` / ``inference_model`` on the pipeline configs, the
configs the phases dump and the products, image files included (a grey model read a PNG in colour); our config
names in mmpretrain's ``ModelHub`` from any folder; the metafiles (paper, code, sizes recounted, results, no
weights, the official checkpoints); mmdet's ``init_detector`` / ``DetInferencer`` and mmseg's ``init_model`` /
``inference_model`` on the downstream configs, whose settings placeholders reached them unfilled.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
import yaml
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmincubation.datasets.fashion_mnist import DEBIAN_ROOT
from mmincubation.datasets.pasted_fashion_mnist import PasteParams, load_fashion_mnist, paste_canvas
from mmincubation.datasets.transforms import ConvertChannels
from mmincubation.engine.downstream import FILLED, RUNNER_TYPE, SettingError, resolve_settings
from mmincubation.engine.runner.fit_checks import build_on_meta
from mmincubation.model_index import MODEL_INDEX, model_index_path

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = ROOT / 'configs' / 'downstream' / 'demo'
DEMO_DET = DOWNSTREAM / 'mask-rcnn_vit-tiny-p4-incubated_simplefpn_pasted-fashion-mnist.py'
DEMO_SEG = DOWNSTREAM / 'upernet_vit-tiny-p4-incubated_pasted-fashion-mnist.py'
FASHION_MNIST = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
                 'Ankle boot')
#: The tiny pipeline's ViT (conftest.TINY_PIPELINE), as get_model takes it for a demo name.
TINY_VIT = dict(backbone=dict(arch=dict(embed_dims=32, num_layers=4, num_heads=2, feedforward_channels=64)),
                head=dict(in_channels=32))
needs_data = pytest.mark.skipif(not Path(DEBIAN_ROOT).is_dir(), reason=f'{DEBIAN_ROOT} not installed')


@pytest.fixture(scope='module')
def fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 10k Fashion-MNIST test images ``(N, 28, 28) uint8`` and labels."""
    return load_fashion_mnist(split='validation')


@pytest.fixture(scope='module')
def image_files(fashion_mnist, tmp_path_factory) -> dict[str, Path | np.ndarray]:
    """A real test image as a grey PNG, a colour PNG (the grey value in B, G and R) and the array itself."""
    folder = tmp_path_factory.mktemp('images')
    image = fashion_mnist[0][0]
    mmcv.imwrite(image, str(folder / 'grey.png'))
    mmcv.imwrite(mmcv.gray2bgr(image), str(folder / 'colour.png'))
    return {'grey.png': folder / 'grey.png', 'colour.png': folder / 'colour.png', 'array': image}


@pytest.fixture(scope='module')
def canvas(fashion_mnist) -> np.ndarray:
    """A 64x64 grey canvas of pasted Fashion-MNIST test images, as the downstream demos see (1-3 items)."""
    image, items = paste_canvas(PasteParams(), 'validation', 0, *fashion_mnist)
    assert image.shape == (64, 64) and items
    return image


# ----------------------------------------------------------------------------------------------- 1: mmpretrain APIs

def test_convert_channels_makes_any_image_fit_and_passes_the_data_sets_own_unchanged():
    rng = np.random.default_rng(0)
    grey, colour = rng.integers(0, 256, (5, 7), dtype=np.uint8), rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    to_grey, to_colour = ConvertChannels(1), ConvertChannels(3)
    assert to_grey(dict(img=grey))['img'] is grey and to_colour(dict(img=colour))['img'] is colour
    np.testing.assert_array_equal(to_grey(dict(img=colour))['img'], mmcv.bgr2gray(colour))
    np.testing.assert_array_equal(to_grey(dict(img=mmcv.gray2bgr(grey)))['img'], grey)  # equal channels: exact
    assert to_colour(dict(img=grey[..., None]))['img'].shape == (5, 7, 3)
    with pytest.raises(ValueError, match=r'expected an image of shape \(H, W\), \(H, W, 1\) or \(H, W, 3\), got '
                                         r'\(5, 7, 4\)'):
        to_grey(dict(img=np.zeros((5, 7, 4), np.uint8)))
    with pytest.raises(ValueError, match='channels must be 1 .* or 3 .*, got 2'):
        ConvertChannels(2)


@needs_data
def test_the_demo_test_pipeline_leaves_the_data_sets_images_as_they_were(fashion_mnist, load):
    """What is evaluated does not change: a test image gives the input of the pipeline before (PackInputs alone)."""
    from mmengine.dataset import Compose
    cfg = load(ROOT / 'configs' / 'incubate_demo_fashion_mnist.py')
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        pipeline, before = Compose(cfg.test_dataloader.dataset.pipeline), Compose(cfg.test_pipeline)
    assert [t['type'] for t in cfg.test_dataloader.dataset.pipeline][-1] == 'PackInputs'
    for image in fashion_mnist[0][:3]:
        ours, theirs = pipeline(dict(img=image.copy())), before(dict(img=image.copy()))
        assert torch.equal(ours['inputs'], theirs['inputs']) and ours['inputs'].shape == (1, 28, 28)


def _classify(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The classifier's scores for one grey 28x28 image, as the data set's test pipeline feeds it."""
    data = model.data_preprocessor(dict(inputs=[torch.tensor(image)[None]]), False)
    with torch.no_grad():
        return model(data['inputs'], mode='tensor').softmax(-1)[0].numpy()


PRODUCTS = [('tiny.py', 'finetune/finetuned.pth'), ('tiny.py', 'assembled.pth'),
            ('work/finetune/tiny.py', 'finetune/finetuned.pth'), ('work/meta/tiny.py', 'meta/meta.pth')]


@needs_data
@pytest.mark.parametrize('config, product', PRODUCTS, ids=[f'{c}+{p}' for c, p in PRODUCTS])
def test_the_stock_inferencer_classifies_image_files_with_the_products_classes(tiny_work_dir, image_files, config,
                                                                                product):
    """Pipeline config or a phase's dumped config, with a product: every tensor of the product is loaded, the
    classes are the product's, a grey or colour PNG and the array get the model's own scores for the image."""
    from mmpretrain import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(str(tiny_work_dir.parent / config),
                                               pretrained=str(tiny_work_dir / product), device='cpu')
    saved = torch.load(tiny_work_dir / product, weights_only=True)
    state = inferencer.model.state_dict()
    assert set(saved['state_dict']) == set(state)
    assert all(torch.equal(state[key], value) for key, value in saved['state_dict'].items())
    assert list(inferencer.classes) == list(saved['meta']['dataset_meta']['classes']) == list(FASHION_MNIST)

    expected = _classify(inferencer.model, image_files['array'])
    results = inferencer([str(image_files['grey.png']), str(image_files['colour.png']), image_files['array']])
    for result in results:
        np.testing.assert_allclose(result['pred_scores'], expected, rtol=0, atol=1e-6)
        assert result['pred_label'] == int(expected.argmax())
        assert result['pred_class'] == FASHION_MNIST[result['pred_label']]


# ----------------------------------------------------------------------------------------------- 2: names

def _metafiles() -> dict[str, dict]:
    """The metafiles model-index.yml imports, read: path (from the top of the repository) -> content."""
    index = yaml.safe_load((ROOT / MODEL_INDEX).read_text())
    return {path: yaml.safe_load((ROOT / path).read_text()) for path in index['Import']}


def _models() -> dict[str, dict]:
    return {model['Name']: model for metafile in _metafiles().values() for model in metafile['Models']}


def test_the_model_index_is_the_installed_one_else_the_checkouts(tmp_path):
    package = tmp_path / 'repo' / 'mmincubation'
    (package / '.mim').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=rf'no model-index.yml in {package / ".mim"} nor {package.parent}'):
        model_index_path(package)
    (package.parent / MODEL_INDEX).write_text('Import: []\n')
    assert model_index_path(package) == package.parent / MODEL_INDEX  # a clone used in place
    (package / '.mim' / MODEL_INDEX).write_text('Import: []\n')
    assert model_index_path(package) == package / '.mim' / MODEL_INDEX  # installed
    assert model_index_path() in (ROOT / MODEL_INDEX, ROOT / 'mmincubation' / '.mim' / MODEL_INDEX)


def test_every_config_name_resolves_from_any_folder(tmp_path, monkeypatch):
    """``import mmincubation`` (conftest) registered the index: each name has its config, as an absolute path."""
    from mmpretrain import get_model, list_models
    from mmpretrain.apis import ModelHub
    monkeypatch.chdir(tmp_path)
    models = _models()
    assert set(models) <= set(list_models())
    for name, model in models.items():
        config = Path(ModelHub._models_dict[name].config)
        assert config.is_absolute() and config.resolve() == (ROOT / model['Config']).resolve(), name
    assert ModelHub.get('mask-rcnn_vit-b-incubated_simplefpn_1x_coco').config.model.backbone.img_size == (1024, 1024)
    vit_b = get_model('incubate_vit_b')
    assert vit_b.backbone.num_layers == 12 and vit_b._metainfo.weights is None
    assert sum(p.numel() for p in vit_b.parameters()) == models['incubate_vit_b']['Metadata']['Parameters']


@needs_data
def test_get_model_and_inference_model_take_a_demo_name_and_a_product(tiny_work_dir, image_files):
    from mmpretrain import get_model, inference_model
    product = tiny_work_dir / 'finetune' / 'finetuned.pth'
    model = get_model('incubate_demo_fashion_mnist', pretrained=str(product), **TINY_VIT)
    assert list(model._dataset_meta['classes']) == list(FASHION_MNIST)
    result = inference_model(model, str(image_files['colour.png']))
    expected = _classify(model, image_files['array'])
    assert result['pred_label'] == int(expected.argmax())
    assert result['pred_class'] == FASHION_MNIST[result['pred_label']]
    np.testing.assert_allclose(result['pred_scores'], expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------- 3: metafiles

#: The paper's ImageNet-1K / CIFAR-100 top-1 (the official README, Table 1 and 2, the supplement), and ours for the
#: demo (`make demo`, docs/get_started.md); the other classification configs have no result.
TOP1 = {'incubate_vit_b': 82.4, 'incubate_vit_l': 83.9, 'incubate_vit_h': 84.3,
        'e2e_vit_b': 81.8, 'e2e_vit_l': 81.4, 'e2e_vit_h': 81.6,
        'incubate_vit_b_deit3': 83.3, 'incubate_swin_b_deit3': 83.8, 'e2e_vit_b_deit3': 83.1, 'e2e_swin_b_deit3': 82.2,
        'incubate_deit_t_128': 77.2, 'e2e_deit_t_128': 69.4, 'incubate_deit_t_32': 75.3, 'e2e_deit_t_32': 72.8,
        'incubate_demo_fashion_mnist': 78.72}
OFFICIAL = 'https://huggingface.co/nzl-thu/Model-Assembling/blob/main/pretrained/vit_{}.pth'


def test_each_config_family_has_a_metafile_with_paper_code_results_and_no_weights():
    metafiles = _metafiles()
    assert set(metafiles) == {f'configs/metafiles/{p.name}' for p in (ROOT / 'configs' / 'metafiles').glob('*.yml')}
    listed = set()
    for path, metafile in metafiles.items():
        for collection in metafile['Collections']:
            assert collection['Paper'] == {'Title': 'Deep Incubation: Training Large Models by Divide-and-Conquering',
                                           'URL': 'https://arxiv.org/abs/2212.04129'}, path
            assert collection['Code'] == {'URL': 'https://github.com/LeapLabTHU/Deep-Incubation'}, path
            assert 'No weights are released' in collection['Description'], path
        names = {collection['Name'] for collection in metafile['Collections']}
        for model in metafile['Models']:
            assert model['In Collection'] in names and (ROOT / model['Config']).is_file(), model['Name']
            assert 'Weights' in model and model['Weights'] is None, model['Name']
            (result, ) = model['Results']
            assert set(result) == {'Task', 'Dataset', 'Metrics'}, model['Name']
            listed.add(model['Config'])
    configs = ROOT / 'configs'
    expected = {str(path.relative_to(ROOT)) for pattern in ('**/incubate_*.py', '**/e2e_*.py', 'downstream/**/*.py')
                for path in configs.glob(pattern) if '_base_' not in path.parts}
    assert listed == expected

    models = _models()
    classifiers = {name: model for name, model in models.items()
                   if model['Results'][0]['Task'] == 'Image Classification'}
    assert {name: model['Results'][0]['Metrics'].get('Top 1 Accuracy') for name, model in classifiers.items()
            if model['Results'][0]['Metrics']} == TOP1
    converted = {name: model['Converted From'] for name, model in models.items() if 'Converted From' in model}
    assert converted == {f'incubate_vit_{size}': {'Weights': OFFICIAL.format(name),
                                                 'Code': 'https://github.com/LeapLabTHU/Deep-Incubation'}
                         for size, name in (('b', 'base'), ('l', 'large'), ('h', 'huge'))}


def test_the_metafiles_parameters_are_those_of_the_configs_models(load):
    """Every classifier, recounted on the meta device (no memory, no initialisation)."""
    for name, model in _models().items():
        if model['Results'][0]['Task'] != 'Image Classification':
            continue
        params = sum(p.numel() for p in build_on_meta(load(ROOT / model['Config'])).parameters())
        assert params == model['Metadata']['Parameters'], name


@pytest.mark.parametrize('name', ['incubate_demo_fashion_mnist', 'incubate_demo_fashion_mnist_swin',
                                  'incubate_demo_fashion_mnist_eva02', 'incubate_demo_fashion_mnist_convnext',
                                  'incubate_deep-vit-16x32-p7_fashion-mnist'])
def test_the_metafiles_flops_are_mmengines_count_of_one_image(load, name):
    """The small models, recounted on the CPU for one 28x28 grey image (the ImageNet ones take minutes)."""
    model = _models()[name]
    cfg = load(ROOT / model['Config'])
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        from mmpretrain.registry import MODELS
        network = MODELS.build(cfg.model).eval()
    info = get_model_complexity_info(network, input_shape=(1, 28, 28), show_table=False, show_arch=False)
    assert (info['params'], info['flops']) == (model['Metadata']['Parameters'], model['Metadata']['FLOPs'])


# ----------------------------------------------------------------------------------------------- 4: mmdet, mmseg

def _random_checkpoint(model: torch.nn.Module, classes: tuple[str, ...], path: Path) -> Path:
    """``model``'s random weights with the classes a training run records (``meta.dataset_meta``)."""
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=list(classes)))), path)
    return path


def test_the_settings_are_filled_in_when_a_config_is_loaded_and_follow_later_merges(tmp_path):
    cfg = Config.fromfile(str(DEMO_DET))
    assert cfg.runner_type == RUNNER_TYPE
    assert cfg.model.data_preprocessor.mean == [72.94] and tuple(cfg.model.backbone.img_size) == (64, 64)
    assert cfg.model.roi_head.bbox_head.num_classes == cfg.model.roi_head.mask_head.num_classes == 10
    cfg.merge_from_dict({'image_size': 96, 'model.roi_head.mask_head.num_classes': 4})  # as --cfg-options
    assert tuple(cfg.model.backbone.img_size) == (96, 96) and cfg.test_pipeline[1].scale == (96, 96)
    assert cfg.model.roi_head.mask_head.num_classes == 4  # a field set directly keeps its value
    cfg.classes = ('a', 'b')  # assigned in Python: resolve_settings fills it in, and the values are final
    resolve_settings(cfg)
    assert cfg.model.roi_head.bbox_head.num_classes == 2 and cfg.model.roi_head.mask_head.num_classes == 4
    assert FILLED not in cfg and '${' not in cfg.pretty_text
    with pytest.raises(SettingError, match=r"^setting image_size = '64': needs a positive int"):
        (tmp_path / 'mine.py').write_text(f"_base_ = {str(DEMO_DET)!r}\nimage_size = '64'\n")
        Config.fromfile(str(tmp_path / 'mine.py'))


def test_a_fresh_process_gets_the_settings_filled_in_without_importing_mmincubation(tmp_path):
    """A script that never imports mmincubation: the config's custom_imports bring it in while MMEngine reads the
    file (as in ours), and the Config that MMEngine builds afterwards is filled in."""
    (tmp_path / 'mine.py').write_text(f"runner_type = {RUNNER_TYPE!r}\n"
                                      "custom_imports = dict(imports=['mmincubation'])\nimage_size = 96\n"
                                      "model = dict(img_size=('${image_size}', '${image_size}'))\n")
    script = ('import sys\nfrom mmengine.config import Config\nassert "mmincubation" not in sys.modules\n'
              'print(Config.fromfile(sys.argv[1]).model.img_size)')
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    out = subprocess.run([sys.executable, '-c', script, str(tmp_path / 'mine.py')], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == '(96, 96)'


@needs_data
def test_init_detector_and_det_inferencer_detect_on_a_real_image(canvas, tmp_path):
    from mmdet.apis import DetInferencer, inference_detector, init_detector
    classes = FASHION_MNIST
    checkpoint = _random_checkpoint(init_detector(str(DEMO_DET), device='cpu'), classes, tmp_path / 'det.pth')
    # the settings passed to the stock loader reach their fields too (pos_embed is resized on loading)
    model = init_detector(str(DEMO_DET), str(checkpoint), device='cpu', cfg_options={'image_size': 96})
    assert model.backbone.patch_resolution == (24, 24) and model.dataset_meta['classes'] == list(classes)
    instances = inference_detector(model, canvas).pred_instances
    count = len(instances)
    assert 0 < count <= 50 and instances.bboxes.shape == (count, 4) and instances.masks.shape == (count, 64, 64)
    assert instances.masks.dtype == torch.bool and int(instances.labels.max()) < len(classes)
    assert bool(((instances.bboxes >= 0) & (instances.bboxes <= 64)).all())

    mmcv.imwrite(canvas, str(tmp_path / 'canvas.png'))
    inferencer = DetInferencer(model=str(DEMO_DET), weights=str(checkpoint), device='cpu')
    assert inferencer.model.dataset_meta['classes'] == list(classes)
    array, png = inferencer([canvas, str(tmp_path / 'canvas.png')], no_save_vis=True)['predictions']
    assert array == png  # the PNG is read grey, as the array is
    count = len(array['labels'])
    assert 0 < count <= 50 and np.array(array['bboxes']).shape == (count, 4) and len(array['scores']) == count
    assert [mask['size'] for mask in array['masks']] == [[64, 64]] * count and max(array['labels']) < len(classes)


@needs_data
def test_init_model_and_inference_model_segment_a_real_image(canvas, tmp_path):
    from mmseg.apis import inference_model, init_model
    classes = Config.fromfile(str(DEMO_SEG)).classes
    checkpoint = _random_checkpoint(init_model(str(DEMO_SEG), device='cpu'), classes, tmp_path / 'seg.pth')
    model = init_model(str(DEMO_SEG), str(checkpoint), device='cpu')
    assert model.dataset_meta['classes'] == list(classes) and len(classes) == 11  # background and 10 items
    result = inference_model(model, canvas)
    assert result.seg_logits.data.shape == (len(classes), 64, 64)
    labels = result.pred_sem_seg.data
    assert labels.shape == (1, 64, 64) and int(labels.min()) >= 0 and int(labels.max()) < len(classes)
    assert torch.equal(labels[0], result.seg_logits.data.argmax(0))
