"""unittest-style tests of the desk services, written the way many Django suites are."""

from django.forms.models import model_to_dict
from django.test import TestCase

from desk import services
from desk.models import Reporter, Section, Story, Tag


class DeskTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.city = Section.objects.create(name="City")

    def setUp(self):
        # one object at a time, as set-up code usually creates them
        self.reporters = [Reporter.objects.create(name=f"Reporter {i}") for i in range(4)]
        self.stories = [
            Story.objects.create(headline=f"Story {i}", section=self.city, reporter_id=r.pk)
            for i, r in enumerate(self.reporters)
        ]


class PublishingTests(DeskTestCase):
    def test_publish_all_reads_each_byline(self):
        # each story's reporter loads while it is validated and saved: no queryset loaded
        # these stories together, so there is no prefetch to add
        services.publish_all(self.stories)
        self.assertEqual(Story.objects.filter(published=True).count(), 4)

    def test_front_page_is_one_query(self):
        services.publish_all(self.stories)
        with self.assertNumQueries(1):
            self.assertEqual(len(services.front_page()), 4)


class TaggingTests(DeskTestCase):
    def test_tags_are_created_once(self):
        for story in self.stories:
            services.tag_story(story, ["politics", "city hall", "budget"])
        self.assertEqual(Tag.objects.count(), 3)

    def test_desk_sections(self):
        sizes = services.desk_sections(["City", "Sport", "Culture", "Business"])
        self.assertEqual(sizes, {"City": 4, "Sport": 0, "Culture": 0, "Business": 0})


class FormTests(DeskTestCase):
    def test_story_forms(self):
        # the test calls a library function (Django's model_to_dict) once per story
        stories = list(Story.objects.order_by("pk"))
        first = model_to_dict(stories[0])
        second = model_to_dict(stories[1])
        third = model_to_dict(stories[2])
        self.assertEqual([first["tags"], second["tags"], third["tags"]], [[], [], []])
