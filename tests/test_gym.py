from tether.gym import ArithmeticTask, get_task, write_task_data
from tether.gym.reviews import PRODUCTS, ReviewsTask


def test_tasks_are_deterministic_from_the_seed():
    assert get_task("reviews", seed=3).sft_examples()[:20] == get_task("reviews", seed=3).sft_examples()[:20]
    assert (
        get_task("reviews", seed=3).pretrain_texts()[:20] != get_task("reviews", seed=4).pretrain_texts()[:20]
    )
    task = get_task("reviews")
    assert task.sft_examples("train")[:50] != task.sft_examples("eval")[:50]


def test_reviews_examples_are_about_the_product():
    task = get_task("reviews")
    for example in task.sft_examples()[:200]:
        prompt, response = (m["content"] for m in example["messages"])
        product = ReviewsTask.product_of(prompt)
        assert product in PRODUCTS and product in response


def test_arithmetic_checks_answers_exactly():
    task = get_task("arithmetic")
    for example in task.sft_examples()[:100]:
        prompt, response = (m["content"] for m in example["messages"])
        assert ArithmeticTask.is_correct(prompt, response)
    assert ArithmeticTask.is_correct("what is 17 + 25?", "17 + 25 = 42")
    assert not ArithmeticTask.is_correct("what is 17 + 25?", "17 + 25 = 43")
    assert not ArithmeticTask.is_correct("what is 17 + 25?", "forty-two")


def test_write_task_data(tmp_path):
    task = get_task("arithmetic")
    task.n_pretrain, task.n_sft = 10, {"train": 5, "eval": 3, "test": 3}
    files = write_task_data(task, tmp_path)
    assert len(files["pretrain"].read_text().splitlines()) == 10
    assert len(files["sft_eval"].read_text().splitlines()) == 3
