"""The JSON API, through the test client; one known N+1 is pinned with assertNumQueries."""

import pytest
from django.test import TestCase

from desk import services
from desk.models import Beat, Reporter, Section, Story, Tag


class StoryApiTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        section = Section.objects.create(name="Sport")
        tag = Tag.objects.create(name="football")
        for i in range(5):
            reporter = Reporter.objects.create(name=f"Writer {i}")
            story = Story.objects.create(headline=f"Match {i}", section=section,
                                         reporter=reporter)
            story.tags.add(tag)

    def test_story_list(self):
        with self.assertNumQueries(1):
            response = self.client.get("/api/stories/")
        self.assertEqual(len(response.json()["stories"]), 5)

    def test_story_list_with_tags(self):
        # known N+1: one tag query per story until the view prefetches tags
        with self.assertNumQueries(6):
            response = self.client.get("/api/stories/with-tags/")
        self.assertEqual(response.json()["stories"][0]["tags"], ["football"])

    def test_sections(self):
        section = Section.objects.get(name="Sport")
        for _ in range(3):
            response = self.client.get(f"/api/sections/{section.pk}/")
            self.assertEqual(response.json()["stories"], 5)


@pytest.mark.django_db
def test_beats_of_all_reporters(django_assert_num_queries):
    for i in range(3):
        Beat.objects.create(reporter=Reporter.objects.create(name=f"R{i}"), topic=f"topic {i}")
    # known N+1: one beat query per reporter (reverse one-to-one), pinned on purpose
    with django_assert_num_queries(4):
        assert services.beats_of(Reporter.objects.order_by("pk")) == ["topic 0", "topic 1",
                                                                      "topic 2"]
