"""Data loading shared by the papers.

Modules (import the one you need; none is imported here, to keep start-up light):

* :mod:`common.data.loader` -- ``BatchLoader``: seeded, resumable, shardable minibatches
* :mod:`common.data.mnist` -- MNIST IDX files and the bundled real 5k subset
* :mod:`common.data.cifar10` -- CIFAR-10 python pickle batches
* :mod:`common.data.stl10` -- STL-10 binary files
* :mod:`common.data.archives` -- a downloaded dataset archive's root, instructions and layout check
  (CIFAR-10, STL-10)
* :mod:`common.data.safe_pickle` -- unpickling data files without running code from them
* :mod:`common.data.imagenet` -- ImageNet / any class-folder image set (``ImageFolder``)
* :mod:`common.data.cityscapes` -- Cityscapes fine labels, label table, palette, id conversion
* :mod:`common.data.musdb` -- MUSDB18 via ``musdb``, training excerpts and audio augmentations
* :mod:`common.data.bundled` -- ``python -m common.data.bundled``: offline default data
"""
