"""Package metadata: the stack itself is installed by tools/install.sh (mmcv needs a compiled build)."""
from setuptools import find_packages, setup

setup(
    name='mmincubation',
    version='0.1.0',
    description='Deep Incubation (divide-and-conquer training of large vision backbones) for OpenMMLab',
    packages=find_packages(include=['mmincubation', 'mmincubation.*']),
    python_requires='>=3.9',
    install_requires=['mmengine==0.10.7', 'mmpretrain==1.2.0', 'mmcv==2.1.0'],
    extras_require={'downstream': ['mmdet==3.3.0', 'mmsegmentation==1.2.2']},
)
