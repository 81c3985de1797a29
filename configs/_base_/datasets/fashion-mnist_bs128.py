# Fashion-MNIST (28x28 grayscale), read from Debian's dataset-fashion-mnist .gz files and
# extracted once, checksum-verified, into data_root. Override data_root / source_root for other paths.
dataset_type = 'mmincubation.CompressedFashionMNIST'
data_root = 'data/fashion_mnist'
source_root = '/usr/share/datasets/fashion-mnist'

data_preprocessor = dict(num_classes=10, mean=[72.94], std=[90.02], to_rgb=False)

train_pipeline = [dict(type='PackInputs')]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=0,
    dataset=dict(type=dataset_type, data_root=data_root, source_root=source_root, split='train', test_mode=False,
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=500,
    num_workers=0,
    # the 10k test images (mmpretrain's MNIST reads the set test_mode names; split='test' says so too, and
    # spares the false warning 'split="train" but test_mode=True. The training set will be used.')
    dataset=dict(type=dataset_type, data_root=data_root, source_root=source_root, split='test', test_mode=True,
                 # first, for images that are not the data set's: the stock inferencers (mmpretrain's
                 # ImageClassificationInferencer, inference_model) read a PNG in colour, and an array may have
                 # any size; the model takes 1 channel at 28x28. The data set's own images (28x28, grey) pass
                 # unchanged: what is evaluated stays the same. Here, not in test_pipeline: top-level variables
                 # are part of every phase's recipe fingerprint, and no phase trains differently for this.
                 pipeline=[dict(type='mmincubation.ConvertChannels', channels=1),
                           dict(type='ResizeEdge', scale=28, edge='short'), dict(type='CenterCrop', crop_size=28),
                           *test_pipeline]),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
