import pytest
import torch

from fgsbir_plugin.metrics import rank_of_target, retrieval_metrics


def test_hand_computed_example_with_ties():
    # 4 queries, 4 gallery photos; the true photo of each query is target[q].
    dist = torch.tensor(
        [
            [0.1, 0.5, 0.9, 0.7],  # true 0 strictly closest -> rank 1
            [0.3, 0.3, 0.9, 0.1],  # true 1 tied with photo 0, photo 3 ahead -> rank 3
            [0.2, 0.2, 0.2, 0.2],  # all tied -> worst rank 4
            [0.4, 0.6, 0.5, 0.6],  # true 3 ahead of nobody but tied with 1, 0 and 2 closer -> rank 4
        ],
        dtype=torch.float64,
    )
    target = torch.tensor([0, 1, 2, 3])
    assert rank_of_target(dist, target).tolist() == [1, 3, 4, 4]
    m = retrieval_metrics(dist, target, ks=(1, 2, 3))
    assert m["acc@1"] == pytest.approx(25.0)
    assert m["acc@2"] == pytest.approx(25.0)
    assert m["acc@3"] == pytest.approx(50.0)
    assert m["mAP"] == pytest.approx(100 * (1 + 1 / 3 + 1 / 4 + 1 / 4) / 4)
    assert m["mean_rank"] == pytest.approx(3.0)
    assert m["median_rank"] == pytest.approx(3.5)


def test_default_keys_and_perfect_retrieval():
    dist = torch.rand(12, 12, dtype=torch.float64) + 1.0
    dist.fill_diagonal_(0.0)
    m = retrieval_metrics(dist, torch.arange(12))
    assert set(m) == {"acc@1", "acc@5", "acc@10", "mAP", "mean_rank", "median_rank"}
    assert m["acc@1"] == 100.0 and m["mAP"] == 100.0 and m["mean_rank"] == 1.0 and m["median_rank"] == 1.0


def test_several_queries_share_a_gallery_photo():
    dist = torch.tensor([[0.0, 1.0], [0.5, 0.2], [0.9, 0.1]])
    m = retrieval_metrics(dist, torch.tensor([0, 0, 1]), ks=(1,))
    assert m["acc@1"] == pytest.approx(200 / 3)
    assert m["median_rank"] == 1.0


@pytest.mark.parametrize(
    "dist,target,match",
    [
        (torch.zeros(3), torch.tensor([0, 0, 0]), "2-D"),
        (torch.zeros(2, 3), torch.tensor([0]), "one gallery index per query"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), "outside"),
        (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), "NaN"),
    ],
)
def test_bad_inputs_one_sentence(dist, target, match):
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(dist, target)


def test_bad_ks():
    with pytest.raises(ValueError, match="positive integers"):
        retrieval_metrics(torch.zeros(1, 2), torch.tensor([0]), ks=(0,))
